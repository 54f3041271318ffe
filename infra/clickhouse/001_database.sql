-- The database every Switchyard telemetry table lives in.
CREATE DATABASE IF NOT EXISTS switchyard;
