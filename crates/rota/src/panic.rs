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
            let backtrace = from_the_panic(&Backtrace::force_capture().to_string());
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

/// The backtrace from the frame that panicked: the hook's and the panic machinery's own
/// frames (this module, `std::panicking`, `core::panicking`) are cut from its top.
fn from_the_panic(backtrace: &str) -> String {
    let mut frames: Vec<String> = vec![];
    for line in backtrace.lines() {
        let is_frame = line
            .trim_start()
            .split_once(':')
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match frames.last_mut() {
            Some(frame) if !is_frame => {
                frame.push('\n');
                frame.push_str(line);
            }
            _ => frames.push(line.to_owned()),
        }
    }
    let machinery = [
        "rota::panic::",
        "std::panicking",
        "core::panicking",
        "rust_begin_unwind",
        "PanicHookInfo",
        "std::sys::backtrace",
        "__rust_end_short_backtrace",
    ];
    // The leading run of machinery frames; the same names further down (the runtime's own
    // catch_unwind) stay.
    let first = frames
        .iter()
        .position(|f| !machinery.iter().any(|m| f.contains(m)))
        .unwrap_or(0);
    frames[first..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backtrace_starts_at_the_frame_that_panicked() {
        let raw = "   0: rota::panic::capture_backtraces::{{closure}}\n             at src/panic.rs:23:29\n   1: std::panicking::panic_with_hook\n   2: core::panicking::panic_bounds_check\n   3: thumbnail::thumbnail::{{closure}}\n             at examples/thumbnail.rs:38:23\n   4: std::panicking::catch_unwind";
        let trimmed = from_the_panic(raw);
        assert!(
            trimmed.starts_with("   3: thumbnail::thumbnail"),
            "{trimmed}"
        );
        assert!(trimmed.contains("examples/thumbnail.rs:38:23"));
        assert!(trimmed.ends_with("4: std::panicking::catch_unwind"));
    }
}
