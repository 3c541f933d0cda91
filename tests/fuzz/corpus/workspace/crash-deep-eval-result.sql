CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'queued', stage TEXT NOT NULL DEFAULT '', config_json TEXT NOT NULL DEFAULT '{}', device TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, started_at REAL, finished_at REAL, error TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '', notes TEXT NOT NULL DEFAULT '', parent_run_id INTEGER, parent_step INTEGER, control TEXT, worker_pid INTEGER, heartbeat_at REAL, updated_at REAL NOT NULL);
CREATE TABLE evals (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, checkpoint_step INTEGER NOT NULL, kind TEXT NOT NULL, params_json TEXT NOT NULL DEFAULT '{}', result_json TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL);
INSERT INTO runs(id, name, status, created_at, updated_at) VALUES(1, 'deep', 'completed', 0, 0);
INSERT INTO evals(run_id, checkpoint_step, kind, params_json, result_json, created_at)
  VALUES(1, 0, 'win_rate', '{}', '{"a":' || replace(hex(zeroblob(100000)), '00', '[') || replace(hex(zeroblob(100000)), '00', ']') || '}', 0);
PRAGMA user_version=1;
