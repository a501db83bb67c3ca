//! A fixed team of threads for the trainer's fork-join phases.
//!
//! A training step forks two or three times (the chunks' forward and
//! backward passes, the weight update), each phase a few hundred
//! microseconds to a few milliseconds long, with a few microseconds of
//! sequential work between. A rayon pool puts its idle workers to sleep
//! within tens of microseconds, so every phase pays a futex wake-up of the
//! sleeping worker, 5-160 us on the 2-core KVM guests measured, and the
//! phase's split waits for it. The team's workers instead spin on a
//! generation counter between phases (with `spin_loop` hints) and park only
//! after [`SPIN_BEFORE_PARK`] without work, so a phase starts on every
//! thread within a cache-line transfer while the step loop runs, and an
//! idle team (evaluation, checkpoints, the next stage of a study) costs no
//! CPU.
//!
//! Work goes out as the items of a slice: claimed in index order from a
//! shared counter by whichever thread is free ([`Team::for_each_mut`]), or
//! item i on thread i % threads ([`Team::for_each_mut_pinned`], the
//! trainer's chunks, whose buffers then stay in one core's caches). The
//! calling thread is one of the team. Either way the result of a phase whose
//! items are independent does not depend on which thread ran which item.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks. The trainer's sequential
/// work between two phases (loss sums, progress, a small model's update)
/// takes well under this; between epochs (evaluation, checkpoints) the
/// workers park and cost nothing. Measured (2 threads, 4 alternating runs):
/// 100 us gave back part of the CNN's gain (0.898 against 0.863 s per epoch;
/// rayon 0.932), as the CNN's sequential update sometimes outlasts it. With
/// a third busy process on the 2 cores, spinning costs: the team's epochs
/// were 4% slower than rayon's (1.861 against 1.782 s), 100 us no better
/// (1.849 s), as a spinning worker gives up the scheduler's credit a
/// sleeping one keeps.
pub const SPIN_BEFORE_PARK: Duration = Duration::from_millis(2);

/// Spin iterations between two clock reads while waiting.
const SPINS_PER_CLOCK_READ: u32 = 256;

/// One phase's work as the workers see it: a type-erased pointer to the
/// caller's closure, valid until every worker has reported back.
#[derive(Clone, Copy)]
struct JobRef(*const (dyn Fn(usize) + Sync));

// SAFETY: the pointee is `Sync` (shared calls from several threads are
// allowed) and `Team::run` keeps it alive until every worker is done with it.
unsafe impl Send for JobRef {}

struct Shared {
    /// Bumped once per phase (and on shutdown); workers wait for a change.
    generation: AtomicU64,
    /// The current phase's job.
    job: Mutex<Option<JobRef>>,
    /// Workers that have not finished the current phase.
    pending: AtomicUsize,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    park_lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    /// A worker's share of the current phase panicked.
    panicked: AtomicBool,
    /// A phase is running: a second one (nested in a job, or from another
    /// thread) would overwrite the job and the counters under the workers.
    busy: AtomicBool,
}

/// A team of `threads` threads: the caller of [`Team::for_each_mut`] and
/// `threads - 1` workers owned by the team (joined on drop). The workers
/// flush subnormals to zero ([`crate::flush_subnormals_on_this_thread`]), as
/// the trainer's compute pools do; the caller should too, so that every
/// thread computes the same values.
pub struct Team {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Team {
    /// A team of `threads` threads (at least 1; 1 runs everything on the
    /// caller), or the error of a worker thread that could not be spawned
    /// (those already started are joined).
    pub fn new(threads: usize) -> std::io::Result<Team> {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: Mutex::new(None),
            pending: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            park_lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            busy: AtomicBool::new(false),
        });
        let mut team = Team {
            shared,
            workers: Vec::with_capacity(threads.saturating_sub(1)),
        };
        for i in 1..threads.max(1) {
            let shared = Arc::clone(&team.shared);
            // On an error, dropping `team` shuts down and joins the workers
            // started so far.
            let worker = std::thread::Builder::new()
                .name(format!("vcortex-team-{i}"))
                .spawn(move || {
                    crate::simd::flush_subnormals_on_this_thread();
                    worker_loop(&shared, i)
                })?;
            team.workers.push(worker);
        }
        Ok(team)
    }

    /// Threads in the team, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i, &mut items[i])` once for every item, items claimed in
    /// index order by whichever team thread is free (the caller takes part),
    /// and returns when all are done. A panic in `f` on any thread is
    /// re-raised here after every thread has stopped.
    pub fn for_each_mut<T: Send>(&self, items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
        let len = items.len();
        if self.workers.is_empty() || len <= 1 {
            return items.iter_mut().enumerate().for_each(|(i, x)| f(i, x));
        }
        let base = SendPtr(items.as_mut_ptr());
        let next = AtomicUsize::new(0);
        self.run(&|_thread| {
            let base = &base;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= len {
                    break;
                }
                // SAFETY: `i < len` indexes `items`, which outlives the
                // phase (`run` returns only after every thread is done), and
                // the shared counter hands each index to exactly one thread,
                // so no two `&mut` alias.
                f(i, unsafe { &mut *base.0.add(i) });
            }
        });
    }

    /// As [`Team::for_each_mut`], but item `i` always runs on team thread
    /// `i % threads` (the caller is thread 0): with one item per thread, a
    /// chunk's buffers stay in the same core's caches from phase to phase,
    /// and each thread's lazily grown scratch sees the same work every time.
    pub fn for_each_mut_pinned<T: Send>(&self, items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
        let len = items.len();
        let threads = self.threads();
        // One item runs on thread 0, the caller, either way.
        if self.workers.is_empty() || len <= 1 {
            return items.iter_mut().enumerate().for_each(|(i, x)| f(i, x));
        }
        let base = SendPtr(items.as_mut_ptr());
        self.run(&|thread| {
            let base = &base;
            for i in (thread..len).step_by(threads) {
                // SAFETY: `i < len` indexes `items`, which outlives the
                // phase; each team thread has its own `thread` index (the
                // caller 0, worker w the index it was spawned with), so the
                // residues mod `threads` keep the threads' items apart.
                f(i, unsafe { &mut *base.0.add(i) });
            }
        });
    }

    /// Runs `job(thread)` on every team thread at once (the caller as
    /// thread 0) and waits for all.
    ///
    /// # Panics
    /// If a phase of this team is already running (a call from inside a job,
    /// or from two threads at once).
    fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        let shared = &*self.shared;
        assert!(
            shared
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok(),
            "a Team runs one phase at a time (nested or concurrent call)"
        );
        // SAFETY: only the lifetime is erased; the workers call the job
        // while `pending` is non-zero, and this function does not return
        // (or unwind) before `pending` is back to zero, so the closure and
        // what it borrows outlive every call.
        let erased: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(job) };
        *lock(&shared.job) = Some(JobRef(erased));
        shared.pending.store(self.workers.len(), Ordering::SeqCst);
        shared.generation.fetch_add(1, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = lock(&shared.park_lock);
            shared.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        let mut spins = 0u32;
        while shared.pending.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(SPINS_PER_CLOCK_READ) {
                // A worker may have been descheduled: let it run.
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
        *lock(&shared.job) = None;
        let worker_panicked = shared.panicked.swap(false, Ordering::SeqCst);
        shared.busy.store(false, Ordering::Release);
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if worker_panicked {
            panic!("a team thread panicked");
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        let shared = &*self.shared;
        shared.shutdown.store(true, Ordering::SeqCst);
        shared.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _guard = lock(&shared.park_lock);
            shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            // A worker never panics outside a job (jobs are caught).
            let _ = w.join();
        }
    }
}

/// The base of the phase's items, shared by the team threads.
struct SendPtr<T>(*mut T);

// SAFETY: the threads only form `&mut` to distinct elements (see
// `for_each_mut`), and `T: Send` lets each element move to another thread.
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// A lock that ignores poisoning: the guarded data (a job pointer, or
/// nothing) stays valid whatever a panicking holder did.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Worker `index` (1..threads): runs each phase's job as thread `index`.
fn worker_loop(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        seen = wait_for_phase(shared, seen);
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let job = (*lock(&shared.job)).expect("a phase without a job");
        // SAFETY: the caller of `run` keeps the job alive until this
        // worker decrements `pending` below.
        let done = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)(index) }));
        if done.is_err() {
            shared.panicked.store(true, Ordering::SeqCst);
        }
        shared.pending.fetch_sub(1, Ordering::Release);
    }
}

/// Waits until the generation differs from `seen` and returns it: spins for
/// [`SPIN_BEFORE_PARK`], then parks on the condition variable.
fn wait_for_phase(shared: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let g = shared.generation.load(Ordering::Acquire);
        if g != seen {
            return g;
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(SPINS_PER_CLOCK_READ) {
            if start.elapsed() >= SPIN_BEFORE_PARK {
                break;
            }
            // With more team threads than free cores, let the others run.
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
    // Announce the sleeper before the last look at the generation: `run`
    // bumps the generation before it reads `sleepers`, so either this look
    // sees the new phase or `run` sees the sleeper and notifies under the
    // lock (which this thread holds from the look until it waits).
    shared.sleepers.fetch_add(1, Ordering::SeqCst);
    let mut guard = lock(&shared.park_lock);
    let g = loop {
        let g = shared.generation.load(Ordering::SeqCst);
        if g != seen {
            break g;
        }
        guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
    };
    drop(guard);
    shared.sleepers.fetch_sub(1, Ordering::SeqCst);
    g
}
