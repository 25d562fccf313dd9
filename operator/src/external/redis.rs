//! A tenant's Redis ACL user, confined to its key prefix.
