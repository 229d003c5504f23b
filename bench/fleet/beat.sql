-- One heartbeat of a simulated pgshim instance: the upsert src/fleet/registry.rs
-- sends (with a usage report), the instance id taken from the pgbench client.
\set sessions random(0, 64)
INSERT INTO pgshim.instance (instance_id, version, started_at, rules_version, config_checksum,
                             phases, sessions, last_reload_error, usage, last_beat)
VALUES ('sim-' || :client_id, '0.1.0', now() - interval '1 hour', 7, 'b2c1f0e9a8d7c6b5',
        '{"users-full-name":"migrate","orders-status":"expand"}'::jsonb, :sessions, NULL,
        '{"rules":{"users-full-name":{"old":{"statements":120},"new":{"statements":4410},"star":{"statements":3}}}}'::jsonb,
        now())
ON CONFLICT (instance_id) DO UPDATE SET version = EXCLUDED.version,
    started_at = EXCLUDED.started_at, rules_version = EXCLUDED.rules_version,
    config_checksum = EXCLUDED.config_checksum, phases = EXCLUDED.phases,
    sessions = EXCLUDED.sessions, last_reload_error = EXCLUDED.last_reload_error,
    usage = EXCLUDED.usage, last_beat = now();
