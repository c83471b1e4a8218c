//! A fixed-size log-linear latency histogram, in the spirit of HdrHistogram.
//!
//! Values are nanoseconds. Below `2 * HALF` (256 ns) every value has its own bucket; above,
//! each power of two is split into `HALF` (128) equal buckets, so a bucket is never wider than
//! 1/128 of the values it holds and a reported percentile is within 0.8% of the true one.
//! The whole range up to `MAX_VALUE` (about 18 minutes) fits in a few thousand `u64` counters,
//! so recording is an index computation and an increment: no allocation, no dependency, and
//! histograms of different workers merge by adding their arrays.

use std::time::Duration;

/// Bits of linear resolution per power of two; 8 gives 128 buckets per octave.
const SUB_BUCKET_BITS: u32 = 8;
/// Buckets per octave above the exact range.
const HALF: u64 = 1 << (SUB_BUCKET_BITS - 1);
/// The largest value with its own bucket; larger values are clamped to it.
const MAX_VALUE: u64 = (1 << 40) - 1;
/// Number of counters needed to cover `0..=MAX_VALUE`.
const BUCKET_COUNT: usize = index_of(MAX_VALUE) + 1;

/// How far a value's bucket is scaled down: 0 in the exact range, else octave minus 7.
const fn shift_for(value: u64) -> u32 {
    if value < 2 * HALF {
        0
    } else {
        // floor(log2(value)) - (SUB_BUCKET_BITS - 1); value >= 256 so this never underflows.
        (63 - value.leading_zeros()) - (SUB_BUCKET_BITS - 1)
    }
}

/// The bucket a value falls in. With `m = value >> shift` in `[HALF, 2 * HALF)` above the
/// exact range, `shift * HALF + m` numbers the buckets contiguously across octaves.
const fn index_of(value: u64) -> usize {
    let shift = shift_for(value);
    (shift as u64 * HALF + (value >> shift)) as usize
}

/// The smallest value in bucket `index`, and the bucket's width.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < 2 * HALF {
        (index, 1)
    } else {
        let shift = index / HALF - 1;
        let mantissa = index - shift * HALF;
        (mantissa << shift, 1 << shift)
    }
}

/// The largest value that lands in bucket `index`.
fn bucket_high(index: usize) -> u64 {
    let (low, width) = bucket_bounds(index);
    low + (width - 1)
}

/// Latency counts in fixed buckets plus exact count, min, max and sum.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKET_COUNT].into_boxed_slice(),
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }
}

impl Histogram {
    /// Records one latency.
    pub(crate) fn record(&mut self, latency: Duration) {
        self.record_nanos(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one value in nanoseconds; values beyond the range count as the range's end.
    pub(crate) fn record_nanos(&mut self, nanos: u64) {
        let value = nanos.min(MAX_VALUE);
        // `index_of(MAX_VALUE) < BUCKET_COUNT` by construction, so this never misses.
        if let Some(counter) = self.counts.get_mut(index_of(value)) {
            *counter += 1;
        }
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += u128::from(value);
    }

    /// Adds another histogram's samples to this one.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of recorded samples.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The largest recorded value in nanoseconds, or `None` when empty.
    pub(crate) fn max_nanos(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// The mean in nanoseconds, or `None` when empty.
    pub(crate) fn mean_nanos(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at quantile `q` (0.0..=1.0) in nanoseconds, or `None` when empty.
    ///
    /// This is the nearest-rank definition: the smallest recorded value such that at least
    /// `ceil(q * count)` samples are at or below it. It is reported as the upper edge of its
    /// bucket (never above the recorded maximum), so it errs on the pessimistic side.
    pub(crate) fn quantile_nanos(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let wanted = (q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64;
        let rank = wanted.clamp(1, self.count);
        let mut seen = 0;
        for (index, &bucket_count) in self.counts.iter().enumerate() {
            seen += bucket_count;
            if seen >= rank {
                return Some(bucket_high(index).min(self.max));
            }
        }
        // Counts always add up to `count`, so the loop returns; this is the same answer anyway.
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps_or_overlaps() {
        assert_eq!(bucket_bounds(0), (0, 1));
        for index in 0..BUCKET_COUNT - 1 {
            assert_eq!(
                bucket_high(index) + 1,
                bucket_bounds(index + 1).0,
                "gap after {index}"
            );
        }
        assert_eq!(bucket_high(BUCKET_COUNT - 1), MAX_VALUE);
    }

    #[test]
    fn every_value_lands_in_a_bucket_that_contains_it_and_is_at_most_one_128th_wide() {
        let mut value = 1u64;
        while value < MAX_VALUE {
            for probe in [value - 1, value, value + 1, value + value / 3] {
                let probe = probe.min(MAX_VALUE);
                let index = index_of(probe);
                let (low, width) = bucket_bounds(index);
                assert!(
                    low <= probe && probe <= bucket_high(index),
                    "{probe} not in bucket {index}"
                );
                assert!(
                    width == 1 || width <= probe / HALF,
                    "bucket of {probe} too wide"
                );
            }
            value = value * 3 / 2 + 1;
        }
    }

    #[test]
    fn small_values_are_exact_percentiles() {
        let mut histogram = Histogram::default();
        for nanos in 1..=100 {
            histogram.record_nanos(nanos);
        }
        assert_eq!(histogram.quantile_nanos(0.5), Some(50));
        assert_eq!(histogram.quantile_nanos(0.9), Some(90));
        assert_eq!(histogram.quantile_nanos(0.99), Some(99));
        assert_eq!(histogram.quantile_nanos(1.0), Some(100));
        assert_eq!(histogram.quantile_nanos(0.0), Some(1));
        assert_eq!(histogram.max_nanos(), Some(100));
        assert_eq!(histogram.mean_nanos(), Some(50.5));
    }

    #[test]
    fn large_values_are_within_one_percent() {
        let mut histogram = Histogram::default();
        // 900 fast requests around 1 ms and 100 slow ones around 10 ms.
        for offset in 0..900 {
            histogram.record(Duration::from_nanos(1_000_000 + offset));
        }
        for offset in 0..100 {
            histogram.record(Duration::from_nanos(10_000_000 + offset));
        }
        let close = |got: Option<u64>, want: u64| {
            let got = got.expect("histogram is not empty") as f64;
            assert!(
                (got - want as f64).abs() / want as f64 <= 0.01,
                "got {got}, want about {want}"
            );
        };
        close(histogram.quantile_nanos(0.5), 1_000_449);
        close(histogram.quantile_nanos(0.9), 1_000_899);
        close(histogram.quantile_nanos(0.99), 10_000_089);
        assert_eq!(histogram.max_nanos(), Some(10_000_099));
        assert!(
            histogram.quantile_nanos(0.5) >= Some(1_000_449),
            "percentiles round up"
        );
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut left = Histogram::default();
        let mut right = Histogram::default();
        let mut both = Histogram::default();
        for value in (0..5_000u64).map(|i| i * i * 37 % 9_000_000) {
            if value % 2 == 0 {
                left.record_nanos(value);
            } else {
                right.record_nanos(value);
            }
            both.record_nanos(value);
        }
        left.merge(&right);
        assert_eq!(left.count(), both.count());
        for q in [0.0, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(left.quantile_nanos(q), both.quantile_nanos(q), "q = {q}");
        }
        assert_eq!(left.max_nanos(), both.max_nanos());
        assert_eq!(left.mean_nanos(), both.mean_nanos());
    }

    #[test]
    fn an_empty_histogram_has_no_percentiles_and_merges_as_identity() {
        let empty = Histogram::default();
        assert_eq!(empty.quantile_nanos(0.5), None);
        assert_eq!(empty.max_nanos(), None);
        assert_eq!(empty.mean_nanos(), None);

        let mut one = Histogram::default();
        one.record_nanos(42);
        one.merge(&empty);
        assert_eq!(one.quantile_nanos(0.0), Some(42));
        assert_eq!(one.count(), 1);
    }

    #[test]
    fn values_beyond_the_range_are_clamped_not_lost() {
        let mut histogram = Histogram::default();
        histogram.record(Duration::from_secs(100_000));
        assert_eq!(histogram.count(), 1);
        assert_eq!(histogram.quantile_nanos(0.5), Some(MAX_VALUE));
    }
}
