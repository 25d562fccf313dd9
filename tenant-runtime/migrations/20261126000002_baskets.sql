-- One hold may cover several ticket types of one event (two adults and a child in one
-- checkout). Stock still moves per ticket type: each holds row reserves one ticket type, and
-- the rows of one checkout share `basket_id`, the id of its first row, which is what the buyer
-- and the order refer to. A single-type hold is a basket of one, as every earlier hold was.
ALTER TABLE holds ADD COLUMN basket_id uuid;
UPDATE holds SET basket_id = id;
ALTER TABLE holds ALTER COLUMN basket_id SET NOT NULL;
ALTER TABLE holds ADD CONSTRAINT holds_basket_fkey FOREIGN KEY (basket_id) REFERENCES holds (id);
CREATE INDEX holds_basket ON holds (basket_id);
-- A ticket type appears at most once in a basket.
CREATE UNIQUE INDEX holds_basket_ticket_type ON holds (basket_id, ticket_type_id);
