-- Events belong to a tenant as jobs and runs do ('' = none: seen by admins and unscoped
-- clients only); an external event's (source, id) is logged once per tenant, so one tenant
-- cannot pre-empt another's event ids.
ALTER TABLE events ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
DROP INDEX events_source_id;
CREATE UNIQUE INDEX events_tenant_source_id ON events (tenant, source, id);
CREATE INDEX events_tenant_seq ON events (tenant, seq);
