//! A tenant's PostgreSQL database and LOGIN role.
