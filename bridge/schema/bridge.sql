-- Tables the bridge owns, beside ejyy's (created by `edge-bridge init-db`; ejyy's are left alone).

-- Every event id written into an ejyy log table, inserted in the same transaction as the log
-- rows: ejyy's log tables have no event id, so this is what makes a redelivered batch a no-op.
-- `batch` tells which rows this transaction inserted (INSERT IGNORE skips the others).
CREATE TABLE IF NOT EXISTS `bridge_event` (
  `event_id` varchar(64) NOT NULL,
  `gateway` varchar(96) NOT NULL,
  `ts` bigint(13) NOT NULL,
  `batch` char(32) NOT NULL,
  `written_at` bigint(13) NOT NULL,
  PRIMARY KEY (`event_id`),
  KEY `batch` (`batch`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The whitelist each gateway was last sent: its version here, its entries one row each below.
-- Deltas are diffs against it, so deletes and status flips in ejyy show up as `del` ops.
CREATE TABLE IF NOT EXISTS `bridge_whitelist` (
  `gateway` varchar(96) NOT NULL,
  `version` bigint(20) NOT NULL,
  `fingerprint` varchar(255) NOT NULL DEFAULT '',
  `updated_at` bigint(13) NOT NULL,
  PRIMARY KEY (`gateway`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `bridge_whitelist_entry` (
  `gateway` varchar(96) NOT NULL,
  `k` varchar(64) NOT NULL,
  `body` text NOT NULL,
  PRIMARY KEY (`gateway`, `k`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Physical IC/NFC card UIDs: ejyy keeps none (its "cards" carry its AES code), so a card issued
-- to a resident is registered here against the ejyy user and house it opens for.
CREATE TABLE IF NOT EXISTS `bridge_card` (
  `uid` varchar(32) NOT NULL,
  `wechat_mp_user_id` bigint(20) NOT NULL,
  `status` tinyint(1) NOT NULL DEFAULT 1,
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`uid`),
  KEY `wechat_mp_user_id` (`wechat_mp_user_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Signed commands sent, one row per jti; `source` is unique so two bridge instances polling the
-- same ejyy remote-open row send it once. The R/cmd/result fills the result columns.
CREATE TABLE IF NOT EXISTS `bridge_command` (
  `jti` varchar(64) NOT NULL,
  `source` varchar(96) DEFAULT NULL,
  `gateway` varchar(96) NOT NULL,
  `target` varchar(64) NOT NULL,
  `act` varchar(32) NOT NULL,
  `by_whom` varchar(96) DEFAULT NULL,
  `sent_at` bigint(13) NOT NULL,
  `ok` tinyint(1) DEFAULT NULL,
  `error` varchar(64) DEFAULT NULL,
  `result_at` bigint(13) DEFAULT NULL,
  PRIMARY KEY (`jti`),
  UNIQUE KEY `source` (`source`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Last R/status and R/health seen per gateway (the ejyy device `online` columns follow them);
-- `snapshot_at`: last unrequested snapshot, so several instances do not all push one.
CREATE TABLE IF NOT EXISTS `bridge_gateway_status` (
  `gateway` varchar(96) NOT NULL,
  `online` tinyint(1) NOT NULL,
  `version` varchar(64) DEFAULT NULL,
  `whitelist_version` bigint(20) DEFAULT NULL,
  `devices` text DEFAULT NULL,
  `snapshot_at` bigint(13) DEFAULT NULL,
  `updated_at` bigint(13) NOT NULL,
  PRIMARY KEY (`gateway`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
