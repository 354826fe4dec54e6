//! Panics in handlers: the message and a backtrace, recorded on the job like any error.
//!
//! A handler's panic is caught where its future is polled ([`std::panic::catch_unwind`]
//! through `FutureExt::catch_unwind`), on the thread that panicked, so a panic hook that
//! keeps the latest backtrace per thread gives the catcher the backtrace of its own panic.
//! The hook chains to the one before it (the panic is still printed as usual).

use std::any::Any;
use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    static LAST_BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) the hook that keeps each thread's latest panic backtrace.
pub(crate) fn capture_backtraces() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let backtrace = Backtrace::force_capture().to_string();
            LAST_BACKTRACE.with(|last| *last.borrow_mut() = Some(backtrace));
            previous(info);
        }));
    });
}

/// The message of a caught panic, and the backtrace this thread's hook kept for it.
pub(crate) fn describe(payload: Box<dyn Any + Send>) -> (String, Option<String>) {
    let message = if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-text panic payload".to_owned()
    };
    let backtrace = LAST_BACKTRACE.with(|last| last.borrow_mut().take());
    (message, backtrace)
}
