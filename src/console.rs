//! Lines for a person on stderr that never fail the program: a closed or
//! full stderr (`2>/dev/full`, a pager that quit) loses the line instead of
//! panicking as `eprintln!` does. The results themselves go to files.

/// `eprintln!` that ignores write errors.
#[macro_export]
macro_rules! note {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
