//! telephony (in progress)
