//! The team executor: every item runs exactly once per phase, whatever the
//! thread count; workers wake from parking; panics reach the caller and
//! leave the team usable; workers flush subnormals.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use vcortex_kernels::team::{Team, SPIN_BEFORE_PARK};

#[test]
fn every_item_once_per_phase() {
    for threads in [1, 2, 3, 8] {
        let team = Team::new(threads).unwrap();
        assert_eq!(team.threads(), threads);
        for len in [0, 1, 2, 3, 7, 64] {
            let mut items: Vec<u64> = (0..len as u64).collect();
            for phase in 0..200u64 {
                team.for_each_mut(&mut items, |i, x| {
                    assert_eq!(*x % 1000, i as u64 % 1000);
                    *x += 1000;
                });
                for (i, x) in items.iter().enumerate() {
                    assert_eq!(
                        *x,
                        i as u64 + 1000 * (phase + 1),
                        "{threads} threads, {len} items"
                    );
                }
            }
        }
    }
}

#[test]
fn all_threads_take_part_and_wake_after_parking() {
    let team = Team::new(2).unwrap();
    let seen = AtomicUsize::new(0);
    for round in 0..3 {
        // Longer than the spin budget: the worker parks and must be woken.
        std::thread::sleep(SPIN_BEFORE_PARK * 3);
        let mut items = vec![0usize; 2];
        let ids: Vec<_> = (0..2).map(|_| std::sync::Mutex::new(None)).collect();
        // Each item waits (bounded) for the other to start, so both threads
        // must run one: a worker that never woke would fail the check.
        let started = AtomicUsize::new(0);
        team.for_each_mut(&mut items, |i, x| {
            started.fetch_add(1, Ordering::SeqCst);
            let t = std::time::Instant::now();
            while started.load(Ordering::SeqCst) < 2 && t.elapsed() < Duration::from_secs(5) {
                std::hint::spin_loop();
            }
            *ids[i].lock().unwrap() = Some(std::thread::current().id());
            *x = round + 1;
            seen.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(items, vec![round + 1; 2]);
        let a = ids[0].lock().unwrap().unwrap();
        let b = ids[1].lock().unwrap().unwrap();
        assert_ne!(a, b, "round {round}: both items ran on one thread");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 6);
}

#[test]
fn a_panic_reaches_the_caller_and_the_team_goes_on() {
    let team = Team::new(2).unwrap();
    for bad in [0usize, 1, 5] {
        let mut items = vec![0u32; 8];
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            team.for_each_mut(&mut items, |i, x| {
                if i == bad {
                    panic!("item {i} fails");
                }
                *x = 1;
            })
        }));
        assert!(caught.is_err(), "panic in item {bad} was lost");
        let mut items = vec![0u32; 8];
        team.for_each_mut(&mut items, |_, x| *x = 2);
        assert_eq!(items, vec![2; 8]);
    }
}

#[test]
fn workers_flush_subnormals() {
    if !vcortex_kernels::flush_subnormals_on_this_thread() {
        return; // no flush-to-zero control on this target
    }
    let team = Team::new(4).unwrap();
    let mut items = vec![1.0f32; 16];
    // Pinned, so every thread (the caller and each worker) takes items: each
    // must give 0 for a product whose exact value is subnormal.
    team.for_each_mut_pinned(&mut items, |_, x| {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        *x = tiny * std::hint::black_box(0.25f32);
    });
    assert!(items.iter().all(|&x| x == 0.0), "{items:?}");
}

#[test]
fn pinned_items_stay_on_their_thread() {
    for threads in [1, 2, 3] {
        let team = Team::new(threads).unwrap();
        let mut items: Vec<Option<std::thread::ThreadId>> = vec![None; 7];
        let caller = std::thread::current().id();
        for phase in 0..50 {
            team.for_each_mut_pinned(&mut items, |i, slot| {
                let me = std::thread::current().id();
                if let Some(before) = *slot {
                    assert_eq!(before, me, "item {i} moved thread in phase {phase}");
                }
                *slot = Some(me);
            });
        }
        // Item i and item i + threads share a thread; item 0 is the caller's.
        assert_eq!(items[0], Some(caller));
        for i in threads..items.len() {
            assert_eq!(items[i], items[i - threads]);
        }
        let distinct: std::collections::HashSet<_> = items.iter().collect();
        assert_eq!(distinct.len(), threads.min(items.len()));
    }
}

#[test]
fn a_nested_phase_is_refused_not_run() {
    let team = Team::new(2).unwrap();
    let mut outer = vec![0u32; 2];
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        team.for_each_mut(&mut outer, |_, _| {
            let mut inner = vec![0u32; 4];
            team.for_each_mut(&mut inner, |_, x| *x = 1);
        })
    }));
    assert!(caught.is_err());
    // The team is still usable.
    let mut items = vec![0u32; 4];
    team.for_each_mut(&mut items, |i, x| *x = i as u32);
    assert_eq!(items, vec![0, 1, 2, 3]);
}
