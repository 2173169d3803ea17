-- A registry database as hydraguard made it before migrations (metadata.create_all of the registry and
-- the SQL decision store; the admin, intel and campaign tables not created yet), with one org, account and key.
BEGIN TRANSACTION;
CREATE TABLE accounts (
	id VARCHAR(40) NOT NULL,
	org_id VARCHAR(40) NOT NULL,
	tier VARCHAR(60) NOT NULL,
	status VARCHAR(20) NOT NULL,
	signup_at FLOAT NOT NULL,
	signup_ip VARCHAR(64),
	email_domain VARCHAR(255),
	payment_fingerprint VARCHAR(64),
	limit_overrides TEXT,
	PRIMARY KEY (id),
	FOREIGN KEY(org_id) REFERENCES orgs (id)
);
INSERT INTO "accounts" VALUES('acct_pre','org_pre','standard','active',1700000001.0,NULL,NULL,NULL,NULL);
CREATE TABLE api_keys (
	id VARCHAR(40) NOT NULL,
	account_id VARCHAR(40) NOT NULL,
	key_hash VARCHAR(64) NOT NULL,
	hint VARCHAR(40) NOT NULL,
	created_at FLOAT NOT NULL,
	revoked_at FLOAT,
	expires_at FLOAT,
	PRIMARY KEY (id),
	FOREIGN KEY(account_id) REFERENCES accounts (id),
	UNIQUE (key_hash)
);
INSERT INTO "api_keys" VALUES('key_pre','acct_pre','0000000000000000000000000000000000000000000000000000000000000000','hg_abcd…wxyz',1700000002.0,NULL,NULL);
CREATE TABLE decision_groups (
	id VARCHAR(200) NOT NULL,
	members TEXT NOT NULL,
	PRIMARY KEY (id)
);
CREATE TABLE decisions (
	id VARCHAR(40) NOT NULL,
	body BLOB NOT NULL,
	PRIMARY KEY (id)
);
CREATE TABLE decisions_version (
	id INTEGER NOT NULL,
	version INTEGER NOT NULL,
	PRIMARY KEY (id)
);
INSERT INTO "decisions_version" VALUES(1,3);
CREATE TABLE orgs (
	id VARCHAR(40) NOT NULL,
	name VARCHAR(200) NOT NULL,
	tier VARCHAR(60) NOT NULL,
	created_at FLOAT NOT NULL,
	PRIMARY KEY (id)
);
INSERT INTO "orgs" VALUES('org_pre','Before Migrations','standard',1700000000.0);
CREATE INDEX ix_accounts_payment_fingerprint ON accounts (payment_fingerprint);
CREATE INDEX ix_accounts_org_id ON accounts (org_id);
CREATE INDEX ix_api_keys_account_id ON api_keys (account_id);
COMMIT;
