//! Ctrl-C and SIGTERM, for the commands that run until stopped (`run`,
//! `submit`, `serve`): the first asks for a clean stop, a second exits at
//! once with the interrupted code.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::commands::exit;

/// Ctrl-C and SIGTERM, listened to from the moment this is built.
pub(crate) struct Interrupts {
    /// `None` when SIGTERM cannot be listened to: Ctrl-C still works.
    term: Option<Signal>,
}

impl Interrupts {
    pub(crate) fn listen() -> Self {
        Interrupts {
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next Ctrl-C or SIGTERM, whichever comes first.
    pub(crate) async fn recv(&mut self) {
        match self.term.as_mut() {
            Some(term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }

    /// In the background: the next interrupt exits the process now.
    pub(crate) fn exit_on_next(mut self) {
        tokio::spawn(async move {
            self.recv().await;
            std::process::exit(i32::from(exit::INTERRUPTED));
        });
    }
}

/// In the background: the first interrupt calls `stop`, a second exits now.
pub(crate) fn on_interrupt(stop: impl FnOnce() + Send + 'static) {
    tokio::spawn(async move {
        let mut interrupts = Interrupts::listen();
        interrupts.recv().await;
        stop();
        interrupts.exit_on_next();
    });
}

/// Past a file-size limit (RLIMIT_FSIZE) the kernel sends SIGXFSZ, whose
/// default action kills the process mid-write. With a handler installed the
/// write fails with EFBIG instead, and the journal error is reported cleanly.
pub(crate) fn ignore_file_size_signal() {
    const SIGXFSZ: i32 = 25;
    if let Ok(mut s) = signal(SignalKind::from_raw(SIGXFSZ)) {
        tokio::spawn(async move { while s.recv().await.is_some() {} });
    }
}
