// Webhook endpoints and deliveries: SQL shared by both backends (included like backend.rs).
