//! How many requests to keep in flight to reach a rate: Little's law
//! (requests in flight = rate x round trip), a quarter more as headroom for
//! the round trip's spread. EBS reads size themselves by it as they go
//! (`source::ebs`); writes to Azure once, from a round trip measured before
//! the copy (`upload`).

/// Headroom over Little's law, for the round trip's spread.
pub const HEADROOM: f64 = 1.25;

/// Requests in flight to reach `rate` per second at a round trip of
/// `rtt_secs` seconds, with headroom, from `min` to `cap`.
pub fn in_flight(rate: f64, rtt_secs: f64, min: usize, cap: usize) -> usize {
    let cap = cap.max(1);
    // A NaN or negative product reads as 0, a huge one as usize::MAX: both clamp.
    ((rate * rtt_secs * HEADROOM).ceil() as usize).clamp(min.min(cap), cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_times_round_trip_with_headroom_within_bounds() {
        assert_eq!(in_flight(1000.0, 0.2, 8, 512), 250);
        assert_eq!(in_flight(400.0, 0.05, 16, 64), 25);
        assert_eq!(in_flight(1000.0, 2.0, 8, 512), 512);
        assert_eq!(in_flight(20.0, 0.005, 8, 512), 8);
        assert_eq!(in_flight(f64::NAN, 0.1, 8, 512), 8);
        assert_eq!(in_flight(1000.0, 0.1, 8, 0), 1, "a cap of 0 is one");
    }
}
