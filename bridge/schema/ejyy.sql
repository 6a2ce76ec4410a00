-- ejyy (e家宜业, github.com/chowa/ejyy) table shapes used by the bridge.
-- Taken column for column from ejyy's published db.sql (resource/db.sql in chowa/ejyy); only the
-- tables the bridge reads or writes are kept, and each table's PRIMARY KEY / KEY / AUTO_INCREMENT
-- (which db.sql adds with ALTER TABLE at the end of the file) is folded into its CREATE TABLE.
-- Used by the tests to build an ejyy database; a real deployment already has these tables.

CREATE TABLE IF NOT EXISTS `ejyy_community_info` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `name` varchar(12) NOT NULL,
  `banner` varchar(128) DEFAULT NULL,
  `phone` varchar(11) NOT NULL,
  `province` varchar(12) NOT NULL,
  `city` varchar(12) NOT NULL,
  `district` varchar(12) NOT NULL,
  `created_by` bigint(20) NOT NULL,
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_building_info` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `community_id` bigint(20) NOT NULL,
  `type` tinyint(4) NOT NULL COMMENT '1 住宅 ；2 车位； 3仓房; 4 商户；5 车库',
  `area` varchar(26) DEFAULT NULL COMMENT '单位后台控制 如 区 期',
  `building` varchar(26) DEFAULT NULL COMMENT '只有type为1时生效',
  `unit` varchar(26) DEFAULT NULL COMMENT '单元号',
  `number` varchar(26) NOT NULL COMMENT '门牌号',
  `construction_area` float NOT NULL,
  `created_by` bigint(20) NOT NULL,
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `community_id` (`community_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_wechat_mp_user` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `open_id` varchar(28) NOT NULL,
  `union_id` varchar(28) NOT NULL,
  `nick_name` varchar(12) DEFAULT NULL,
  `real_name` varchar(8) DEFAULT NULL,
  `idcard` varchar(18) DEFAULT NULL,
  `phone` varchar(11) DEFAULT NULL,
  `avatar_url` varchar(256) DEFAULT '/avatar/default.png',
  `gender` tinyint(1) NOT NULL DEFAULT 0 COMMENT '1 男 2女	',
  `signature` varchar(56) NOT NULL DEFAULT '不一定每天都很好，但每天都会有些小美好在等你',
  `status` tinyint(1) NOT NULL DEFAULT 1 COMMENT '1 正常 0冻结',
  `intact` tinyint(4) NOT NULL DEFAULT 0 COMMENT '0 身份信息未补全； 1补全',
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `mobile` (`phone`),
  KEY `open_id` (`open_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_user_building` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `building_id` bigint(20) NOT NULL,
  `wechat_mp_user_id` bigint(20) NOT NULL,
  `authenticated` tinyint(1) DEFAULT 0,
  `authenticated_type` tinyint(4) DEFAULT NULL COMMENT '1 实名信息自行关联；2 物业公司认证 3 业主认证',
  `authenticated_user_id` bigint(20) DEFAULT NULL COMMENT '根据type查询认证用户',
  `status` tinyint(4) NOT NULL DEFAULT 1 COMMENT '1 正常；0 解绑',
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `building_id` (`building_id`),
  KEY `wechat_mp_user_id` (`wechat_mp_user_id`),
  KEY `authenticated_type` (`authenticated_type`),
  KEY `authenticated_user_id` (`authenticated_user_id`),
  KEY `status` (`status`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_user_car` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `wechat_mp_user_id` bigint(20) NOT NULL,
  `building_id` bigint(20) NOT NULL,
  `car_number` varchar(8) NOT NULL,
  `car_type` tinyint(1) NOT NULL DEFAULT 1 COMMENT '1 蓝牌；2黄牌',
  `is_new_energy` tinyint(4) NOT NULL DEFAULT 0,
  `status` tinyint(1) NOT NULL DEFAULT 1 COMMENT '1 正常 0 删除',
  `sync` tinyint(1) NOT NULL DEFAULT 0,
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `wechat_mp_user_id` (`wechat_mp_user_id`),
  KEY `building_id` (`building_id`),
  KEY `car_number` (`car_number`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_vistor` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `community_id` bigint(20) NOT NULL,
  `building_id` bigint(20) NOT NULL,
  `wechat_mp_user_id` bigint(20) DEFAULT NULL,
  `property_company_user_id` bigint(20) DEFAULT NULL,
  `vistor_name` varchar(8) NOT NULL,
  `vistor_phone` varchar(11) NOT NULL,
  `car_number` varchar(8) DEFAULT NULL,
  `have_vistor_info` tinyint(1) NOT NULL DEFAULT 0,
  `expire` bigint(13) NOT NULL,
  `used_at` bigint(13) DEFAULT NULL,
  `scan_by` bigint(20) DEFAULT NULL,
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `community_id` (`community_id`),
  KEY `building_id` (`building_id`),
  KEY `wechat_mp_user_id` (`wechat_mp_user_id`),
  KEY `scan_by` (`scan_by`),
  KEY `property_company_user_id` (`property_company_user_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_community_remote_open_door_log` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `door_id` bigint(20) NOT NULL,
  `community_id` bigint(20) NOT NULL,
  `wechat_mp_user_id` bigint(20) NOT NULL,
  `success` tinyint(4) NOT NULL DEFAULT 0,
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `door_id` (`door_id`),
  KEY `community_id` (`community_id`),
  KEY `wechat_mp_user_id` (`wechat_mp_user_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_iot_entrance` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `community_id` bigint(20) NOT NULL,
  `sign` varchar(32) NOT NULL,
  `secret` varchar(128) NOT NULL,
  `name` varchar(56) NOT NULL,
  `building` varchar(32) DEFAULT NULL,
  `lng` double DEFAULT NULL,
  `lat` double DEFAULT NULL,
  `category` tinyint(4) NOT NULL,
  `online` tinyint(1) NOT NULL DEFAULT 0,
  `created_by` bigint(20) NOT NULL,
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `community_id` (`community_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_iot_entrance_log` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `wechat_mp_user_id` bigint(20) DEFAULT NULL,
  `vistor_id` bigint(20) DEFAULT NULL,
  `entrance_id` bigint(20) NOT NULL,
  `method` tinyint(1) NOT NULL COMMENT '1 二维码 2 NFC 3 IC卡',
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `entrance_id` (`entrance_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_iot_elevator` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `community_id` bigint(20) NOT NULL,
  `sign` varchar(32) NOT NULL,
  `secret` varchar(128) NOT NULL,
  `name` varchar(56) NOT NULL,
  `building` varchar(32) DEFAULT NULL,
  `category` tinyint(4) NOT NULL,
  `verify_property_fee` tinyint(1) NOT NULL DEFAULT 0,
  `lng` double DEFAULT NULL,
  `lat` double DEFAULT NULL,
  `online` tinyint(1) NOT NULL DEFAULT 0,
  `created_by` bigint(20) NOT NULL,
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `community_id` (`community_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_iot_elevator_log` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `wechat_mp_user_id` bigint(20) DEFAULT NULL,
  `vistor_id` bigint(20) DEFAULT NULL,
  `elevator_id` bigint(20) NOT NULL,
  `method` tinyint(1) NOT NULL COMMENT '1 二维码 2 NFC 3 IC卡',
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `elevator_id` (`elevator_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_iot_park` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `community_id` bigint(20) NOT NULL,
  `name` varchar(32) NOT NULL,
  `secret` varchar(128) NOT NULL,
  `sign` varchar(32) NOT NULL,
  `verify_property_fee` tinyint(1) NOT NULL DEFAULT 0,
  `lng` double DEFAULT NULL,
  `lat` double DEFAULT NULL,
  `online` tinyint(1) NOT NULL DEFAULT 0,
  `created_by` bigint(20) NOT NULL,
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `community_id` (`community_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_iot_park_blacklist` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `park_id` bigint(20) NOT NULL,
  `car_number` varchar(9) NOT NULL,
  `created_by` bigint(20) NOT NULL,
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `park_id` (`park_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `ejyy_iot_park_log` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `park_id` int(11) NOT NULL,
  `car_number` varchar(8) NOT NULL,
  `gate` varchar(32) NOT NULL,
  `is_leave` tinyint(1) NOT NULL,
  `created_at` bigint(13) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `park_id` (`park_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
