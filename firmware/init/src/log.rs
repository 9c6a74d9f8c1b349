//! The box's log: the ring and sink of [`admin::log`] (so that the
//! console and the web page show the same lines), and init's macros.

pub use admin::log::*;

/// Logs a formatted line from init itself.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::log::line("init", &format!($($arg)*)) };
}

/// Logs a line that needs a person's attention, marked so it stands out
/// on the console and in `status`.
#[macro_export]
macro_rules! alarm {
    ($($arg:tt)*) => { $crate::log::line("init", &format!("*** {} ***", format!($($arg)*))) };
}
