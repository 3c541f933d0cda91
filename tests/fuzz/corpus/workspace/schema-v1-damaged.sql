CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'queued',
  stage TEXT NOT NULL DEFAULT '',
  config_json TEXT NOT NULL DEFAULT '{}',
  device TEXT NOT NULL DEFAULT '',
  created_at REAL NOT NULL,
  started_at REAL,
  finished_at REAL,
  error TEXT NOT NULL DEFAULT '',
  tags TEXT NOT NULL DEFAULT '',
  notes TEXT NOT NULL DEFAULT '',
  parent_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
  parent_step INTEGER,
  control TEXT,
  worker_pid INTEGER,
  heartbeat_at REAL,
  updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step INTEGER NOT NULL,
  key TEXT NOT NULL,
  value REAL,
  wall_time REAL NOT NULL,
  tokens_seen REAL
);
CREATE TABLE IF NOT EXISTS samples (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step INTEGER NOT NULL,
  prompt_index INTEGER NOT NULL,
  prompt TEXT NOT NULL,
  policy_text TEXT NOT NULL,
  reference_text TEXT NOT NULL,
  policy_score REAL,
  reference_score REAL
);
CREATE TABLE IF NOT EXISTS checkpoints (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step INTEGER NOT NULL,
  path TEXT NOT NULL,
  metrics_json TEXT NOT NULL DEFAULT '{}',
  created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  time REAL NOT NULL,
  level TEXT NOT NULL,
  text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evals (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  checkpoint_step INTEGER NOT NULL,
  kind TEXT NOT NULL,
  params_json TEXT NOT NULL DEFAULT '{}',
  result_json TEXT NOT NULL DEFAULT '{}',
  created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run_key_step ON metrics(run_id, key, step, value);  -- covering: series reads never touch the table
CREATE INDEX IF NOT EXISTS metrics_run_id ON metrics(run_id, id);
CREATE INDEX IF NOT EXISTS runs_updated ON runs(updated_at);
CREATE INDEX IF NOT EXISTS samples_run_step ON samples(run_id, step);
CREATE INDEX IF NOT EXISTS events_run_id ON events(run_id, id);
CREATE INDEX IF NOT EXISTS checkpoints_run_step ON checkpoints(run_id, step);
CREATE INDEX IF NOT EXISTS evals_run ON evals(run_id, id);
INSERT INTO runs(id,name,status,config_json,created_at,updated_at) VALUES(7,X'ff00c328','weird-status','not json','yesterday',X'00ff');
INSERT INTO metrics(run_id,step,key,value,wall_time) VALUES(7,'ten',X'00','nan',0),(7,9223372036854775807,'loss',-1e999,1e999);
INSERT INTO evals(run_id,checkpoint_step,kind,result_json,created_at) VALUES(7,0,'win_rate','[[[[1]]]]',0);
PRAGMA user_version=1;
