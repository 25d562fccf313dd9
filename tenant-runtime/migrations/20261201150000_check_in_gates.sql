-- Where a ticket was admitted, so a second scan can tell staff when and where the first was.
ALTER TABLE check_ins ADD COLUMN gate text;
