-- When the provider began refusing a pool's launches for a capacity shortage, none taken
-- since (NULL: no shortage): the pool then buys one node at a time until one is taken.
ALTER TABLE pool_state ADD COLUMN short_since DOUBLE PRECISION;
