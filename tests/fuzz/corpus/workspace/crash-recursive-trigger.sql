PRAGMA user_version=0;
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

ALTER TABLE runs ADD COLUMN worker_host TEXT;
ALTER TABLE runs ADD COLUMN total_steps INTEGER;
ALTER TABLE runs ADD COLUMN last_step INTEGER;
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);

CREATE TABLE IF NOT EXISTS studies (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL DEFAULT '',
  spec_toml TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL DEFAULT 'active',
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL
);
ALTER TABLE runs ADD COLUMN study_id INTEGER;
ALTER TABLE runs ADD COLUMN depends_on INTEGER;
ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS runs_study ON runs(study_id, id);
INSERT INTO runs(id,name,status,stage,config_json,device,created_at,started_at,finished_at,tags,worker_pid,worker_host,updated_at,total_steps,last_step)
 VALUES(1,'dpo-beta0.1','completed','preference','{"objective":{"beta":0.1,"loss_type":"sigmoid"},"ganpo":{"enabled":false}}','cpu',1700000000.5,1700000001,1700000900,'baseline,paper',NULL,NULL,1700000900,200,200);
INSERT INTO runs(id,name,status,stage,config_json,created_at,updated_at,worker_pid,worker_host,parent_run_id,parent_step)
 VALUES(2,'ganpo, "quoted"','running','preference','{}',1700001000,1700001001,999999,'other-host',1,200);
INSERT INTO metrics(run_id,step,key,value,wall_time,tokens_seen) VALUES(1,1,'loss',0.693,1700000002,512),(1,1,'rewards/margins',0.0,1700000002,512),(1,2,'loss',NULL,1700000003,NULL),(2,1,'loss',1e308,1700001002,NULL);
INSERT INTO samples(run_id,step,prompt_index,prompt,policy_text,reference_text,policy_score,reference_score) VALUES(1,100,0,'2+2=','4','5, "five"
next line',1,0);
INSERT INTO events(run_id,time,level,text) VALUES(1,1700000001,'info','started'),(1,1700000900,'error','NaN in loss at step 3');
INSERT INTO evals(run_id,checkpoint_step,kind,params_json,result_json,created_at) VALUES(1,200,'preference_accuracy','{"split":"test"}','{"accuracy":0.75,"margin":null,"by_temp":{"0.7":0.6}}',1700000950);
INSERT INTO checkpoints(run_id,step,path,metrics_json,created_at) VALUES(1,200,'checkpoint-200','{}',1700000900);
PRAGMA user_version=3;
CREATE TRIGGER hang AFTER UPDATE ON runs BEGIN
  INSERT INTO events(run_id,time,level,text) SELECT 1,0,'x',count(*) FROM
    (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c);
END;
