//! Test data.

/// `len` incompressible bytes from a xorshift64 generator whose state is `x` (deterministic,
/// continued across calls): values zstd cannot shrink, so stored sizes and part counts are real.
pub fn incompressible(x: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x as u8
        })
        .collect()
}
