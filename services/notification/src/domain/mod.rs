//! Notification domain: validated events and subscriptions, the signature, the retry decision,
//! the addresses webhooks may reach and the email templates. Pure: no gRPC, no database
//! driver, no HTTP or SMTP client, no clock read (times are passed in).

pub mod address;
pub mod delivery;
pub mod email;
pub mod event;
pub mod subscription;
