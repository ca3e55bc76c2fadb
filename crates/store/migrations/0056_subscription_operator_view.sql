-- What an operator sees of a tenant's subscriptions: when the webhook last accepted a notification
-- of each (written in batches, at most once per registry refresh), and a recreate asked for by
-- hand, which the subscription manager carries out on its next pass.
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS last_notification_at timestamptz NULL;
ALTER TABLE subscription_slots ADD COLUMN IF NOT EXISTS recreate_requested_at timestamptz NULL;
