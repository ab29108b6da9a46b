//! A connection's task wakes for every read and write; its timers and the
//! shutdown signal matter a few times in its life. [`SideWake`] lets the
//! task poll those only when one of them woke it.

use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

/// The waker the futures beside a connection are polled with: it marks
/// them due and wakes the task.
pub struct SideWake {
    due: AtomicBool,
    task: AtomicWaker,
}

impl SideWake {
    /// Due at first, so every side future is polled once and registered.
    pub fn new() -> (Arc<SideWake>, Waker) {
        let side = Arc::new(SideWake {
            due: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(side.clone());
        (side, waker)
    }

    /// Whether the side futures are to be polled now. Keeps the task's
    /// waker for their wake-ups.
    pub fn take_due(&self, cx: &Context<'_>) -> bool {
        self.task.register(cx.waker());
        self.due.swap(false, Ordering::AcqRel)
    }

    /// Polls the side futures again next time: one of them finished before
    /// the rest were polled, or the task changed which of them it waits for.
    pub fn set_due(&self) {
        self.due.store(true, Ordering::Release);
    }
}

impl Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.set_due();
        self.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::Poll;

    /// Counts the wake-ups of the task that polls the side futures.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_side_future_is_polled_first_then_only_once_it_woke_the_task() {
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let cx = Context::from_waker(&task_waker);
        let (side, side_waker) = SideWake::new();
        let mut side_cx = Context::from_waker(&side_waker);
        let signal = tokio::sync::Notify::new();
        let mut signalled = pin!(signal.notified());

        assert!(side.take_due(&cx), "due at first");
        assert!(signalled.as_mut().poll(&mut side_cx).is_pending());
        assert!(!side.take_due(&cx), "not due until it wakes");
        assert_eq!(task.0.load(Ordering::SeqCst), 0);

        signal.notify_one();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(side.take_due(&cx), "due once it woke");
        assert_eq!(signalled.as_mut().poll(&mut side_cx), Poll::Ready(()));
        assert!(!side.take_due(&cx));

        side.set_due();
        assert!(side.take_due(&cx), "due when the task asks");
    }
}
