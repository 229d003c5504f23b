//! The tables of the differential test, in two databases: the one behind
//! pgshim (mapped tables with both shapes' columns, seeded before any rule
//! existed, so the new columns start NULL) and the reference (the same
//! columns, always holding both shapes, kept equal by a plain trigger).
//!
//! The reference is exact because every value the workload writes to a
//! mapped column survives the round trip old → new → old unchanged (names of
//! two single words for the split, the three known statuses or NULL for the
//! type change): with such values every phase reads what the truth holds, so
//! a client must get what it gets from a real table that has both shapes.

/// The shape a client was written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Old,
    New,
}

/// The three kinds of rule under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `users.name` -> `users.full_name`.
    Rename,
    /// `payments.status` text -> `payments.status_code` int.
    TypeChange,
    /// `people.name` -> `people.first_name`, `people.last_name`.
    Split,
}

/// Every rule kind, in a fixed order.
pub const KINDS: [Kind; 3] = [Kind::Rename, Kind::TypeChange, Kind::Split];

/// One mapped table and where its columns sit in `SELECT *`.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub rule: &'static str,
    pub old: &'static [&'static str],
    pub new: &'static [&'static str],
    /// The unmapped payload column.
    pub other: &'static str,
    /// Positions of the old and new columns in a physical row.
    pub old_at: &'static [usize],
    pub new_at: &'static [usize],
}

impl Kind {
    pub fn table(self) -> Table {
        match self {
            Kind::Rename => Table {
                name: "users",
                rule: "users-rename",
                old: &["name"],
                new: &["full_name"],
                other: "email",
                old_at: &[1],
                new_at: &[2],
            },
            Kind::TypeChange => Table {
                name: "payments",
                rule: "payments-type",
                old: &["status"],
                new: &["status_code"],
                other: "amount",
                old_at: &[2],
                new_at: &[3],
            },
            Kind::Split => Table {
                name: "people",
                rule: "people-split",
                old: &["name"],
                new: &["first_name", "last_name"],
                other: "city",
                old_at: &[1],
                new_at: &[2, 3],
            },
        }
    }

    /// The mapped columns a client of `shape` names.
    pub fn cols(self, shape: Shape) -> &'static [&'static str] {
        let t = self.table();
        match shape {
            Shape::Old => t.old,
            Shape::New => t.new,
        }
    }
}

/// The tables, in both databases.
pub const TABLES: &str = "
CREATE TABLE users (id int PRIMARY KEY, name text, full_name text, email text DEFAULT 'none@x');
CREATE TABLE payments (id int PRIMARY KEY, user_id int, status text, status_code int, amount int DEFAULT 0);
CREATE TABLE people (id int PRIMARY KEY, name text, first_name text, last_name text, city text DEFAULT 'Oslo');
CREATE TABLE orders (id int PRIMARY KEY, user_id int, amount int, note text);
";

/// A mapped table no workload statement touches, whose rows read differently
/// in each phase (see [`probe_expected`]): it shows which rules a session serves.
pub const PROBE: &str = "
CREATE TABLE phase_probe (id int PRIMARY KEY, a text, b text);
INSERT INTO phase_probe VALUES (1, 'old', 'new'), (2, 'old', NULL);
";

/// What `SELECT a FROM phase_probe ORDER BY id` reads in `phase`.
pub fn probe_expected(phase: &str) -> Vec<String> {
    let rows: [&str; 2] = match phase {
        "expand" => ["old", "old"],
        "migrate" => ["new", "old"],
        _ => ["new", super::NULL],
    };
    rows.iter().map(|r| (*r).to_owned()).collect()
}

/// Rows written before the rules existed: old shape only, new columns NULL.
pub const SEED_OLD_ONLY: &str = "
INSERT INTO users (id, name, email)
  SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE 'Ann ' || i END, 'u' || i || '@x' FROM generate_series(1, 30) i;
INSERT INTO payments (id, user_id, status, amount)
  SELECT i, 1 + i % 9, CASE WHEN i % 11 = 0 THEN NULL ELSE (ARRAY['pending', 'paid', 'failed'])[1 + i % 3] END, i * 7 % 23
  FROM generate_series(1, 30) i;
INSERT INTO people (id, name, city)
  SELECT i, (ARRAY['Ann', 'Bob', 'Cy', 'Di'])[1 + i % 4] || ' ' || (ARRAY['Lee', 'Ray', 'Fox'])[1 + i % 3],
         (ARRAY['Oslo', 'Rome', 'Lima'])[1 + i % 3]
  FROM generate_series(1, 30) i;
INSERT INTO orders (id, user_id, amount, note)
  SELECT i, 1 + i % 13, i * 5 % 17, (ARRAY['Eve Park', 'Jo Kim', 'Al Roe'])[1 + i % 3] FROM generate_series(1, 30) i;
";

/// Rows written with the old shape only while the rules are in migrate, behind
/// pgshim's back (run in both databases; the reference's trigger fills the new
/// columns there): until the next backfill they read their old columns.
pub const UNMIGRATED: &str = "
INSERT INTO users (id, name, email) SELECT 500 + i, 'Eve ' || i, 'v' || i || '@x' FROM generate_series(1, 8) i;
INSERT INTO payments (id, user_id, status, amount)
  SELECT 500 + i, i, (ARRAY['pending', 'paid', 'failed'])[1 + i % 3], i FROM generate_series(1, 8) i;
INSERT INTO people (id, name, city) SELECT 500 + i, 'Jo ' || (ARRAY['Lee', 'Ray'])[1 + i % 2], 'Rome' FROM generate_series(1, 8) i;
";

/// The reference's triggers: a write that changes one shape sets the other
/// with the rule's transform, as pgshim's dual write does.
pub const REFERENCE_SYNC: &str = r#"
CREATE FUNCTION users_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.full_name IS NULL THEN NEW.full_name := NEW.name; ELSIF NEW.name IS NULL THEN NEW.name := NEW.full_name; END IF;
  ELSIF NEW.name IS DISTINCT FROM OLD.name THEN NEW.full_name := NEW.name;
  ELSIF NEW.full_name IS DISTINCT FROM OLD.full_name THEN NEW.name := NEW.full_name;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER users_sync BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION users_sync();

CREATE FUNCTION payments_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (TG_OP = 'INSERT' AND NEW.status_code IS NULL)
     OR (TG_OP = 'UPDATE' AND NEW.status IS DISTINCT FROM OLD.status) THEN
    NEW.status_code := CASE NEW.status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 WHEN 'failed' THEN 3 END;
  ELSIF (TG_OP = 'INSERT' AND NEW.status IS NULL)
     OR (TG_OP = 'UPDATE' AND NEW.status_code IS DISTINCT FROM OLD.status_code) THEN
    NEW.status := CASE NEW.status_code WHEN 1 THEN 'pending' WHEN 2 THEN 'paid' WHEN 3 THEN 'failed' END;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER payments_sync BEFORE INSERT OR UPDATE ON payments FOR EACH ROW EXECUTE FUNCTION payments_sync();

CREATE FUNCTION people_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (TG_OP = 'INSERT' AND NEW.first_name IS NULL AND NEW.last_name IS NULL)
     OR (TG_OP = 'UPDATE' AND NEW.name IS DISTINCT FROM OLD.name) THEN
    NEW.first_name := split_part(NEW.name, ' ', 1);
    NEW.last_name := split_part(NEW.name, ' ', 2);
  ELSIF (TG_OP = 'INSERT' AND NEW.name IS NULL)
     OR (TG_OP = 'UPDATE' AND (NEW.first_name, NEW.last_name) IS DISTINCT FROM (OLD.first_name, OLD.last_name)) THEN
    NEW.name := concat_ws(' ', NEW.first_name, NEW.last_name);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER people_sync BEFORE INSERT OR UPDATE ON people FOR EACH ROW EXECUTE FUNCTION people_sync();
"#;

/// The three rules in `phase`, for a database named by `Db::scope`.
pub fn rules(phase: &str) -> String {
    format!(
        r#"
[[rule]]
id = "phase-probe"
table = "phase_probe"
old = "a"
new = "b"
phase = "{phase}"

[[rule]]
id = "users-rename"
table = "users"
old = "name"
new = "full_name"
phase = "{phase}"

[[rule]]
id = "payments-type"
table = "payments"
old = "status"
new = "status_code"
phase = "{phase}"
[rule.to_new]
status_code = "CASE status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 WHEN 'failed' THEN 3 END"
[rule.to_old]
status = "CASE status_code WHEN 1 THEN 'pending' WHEN 2 THEN 'paid' WHEN 3 THEN 'failed' END"

[[rule]]
id = "people-split"
table = "people"
old = "name"
new = ["first_name", "last_name"]
phase = "{phase}"
[rule.to_new]
first_name = "split_part(name, ' ', 1)"
last_name = "split_part(name, ' ', 2)"
[rule.to_old]
name = "concat_ws(' ', first_name, last_name)"
"#
    )
}

/// Why a physical row behind pgshim does not hold what the reference row
/// holds, read in `phase`; `None` when it does.
///
/// A row whose new columns are all NULL has not migrated: before contract it
/// reads its old columns, which must then equal the reference's. Any other
/// row reads its new columns, which must equal the reference's, and its old
/// columns too (the dual write, kept up in contract while they exist) unless
/// `dual` is false: `COPY … FROM` in contract writes the new ones only.
pub fn row_diff(
    table: &Table,
    phase: &str,
    dual: bool,
    physical: &[String],
    reference: &[String],
) -> Option<String> {
    if physical.len() != reference.len() {
        return Some("column count".into());
    }
    let mapped: Vec<usize> = table.old_at.iter().chain(table.new_at).copied().collect();
    for i in 0..physical.len() {
        if !mapped.contains(&i) && physical[i] != reference[i] {
            return Some(format!("column {i}"));
        }
    }
    let same = |at: &[usize]| at.iter().all(|&i| physical[i] == reference[i]);
    let unmigrated = table.new_at.iter().all(|&i| physical[i] == super::NULL);
    if unmigrated && phase != "contract" {
        return (!same(table.old_at)).then(|| "old columns of an unmigrated row".into());
    }
    if !same(table.new_at) {
        return Some("new columns".into());
    }
    if dual && !same(table.old_at) {
        return Some("old columns (dual write)".into());
    }
    None
}
