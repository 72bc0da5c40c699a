//! Which user a unicast notification goes to.
//!
//! Notification `seq` goes to user [`UserOrder::user`]`(seq)`: every round of
//! `run_users` consecutive notifications reaches each user once, and within
//! a round the users are visited in strides of about 0.618 × `run_users`,
//! so consecutive notifications go to users far apart. A run gives each
//! subscriber process a contiguous range of users; in plain order
//! (`seq % run_users`) every notification of a moment would go to the same
//! process, which would then take the whole delivery rate alone while the
//! others idle, unlike browsers, which are independent.

/// A fixed permutation of `0..users`, the same in every process of a run.
#[derive(Debug, Clone, Copy)]
pub struct UserOrder {
    users: u64,
    stride: u64,
    /// `stride`'s inverse modulo `users`: maps a user back to its position.
    inverse: u64,
}

impl UserOrder {
    /// The order for a run of `users` users (at least 1).
    pub fn new(users: u64) -> Self {
        let users = users.max(1);
        // The golden-ratio stride spreads consecutive positions evenly over
        // the range; the next value coprime to `users` makes it a permutation.
        let mut stride = ((users as f64 * 0.618_033_988_75).round() as u64).max(1);
        while gcd(stride, users) != 1 {
            stride += 1;
        }
        Self {
            users,
            stride,
            inverse: inverse_mod(stride, users),
        }
    }

    /// The user notification `seq` goes to.
    pub fn user(&self, seq: u64) -> u64 {
        mul_mod(seq % self.users, self.stride, self.users)
    }

    /// The position of `user` within a round: the `i < users` with
    /// `self.user(i) == user`.
    pub fn position(&self, user: u64) -> u64 {
        mul_mod(user % self.users, self.inverse, self.users)
    }
}

fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    (u128::from(a) * u128::from(b) % u128::from(m)) as u64
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `a`⁻¹ mod `m` for `gcd(a, m) == 1` (extended Euclid).
fn inverse_mod(a: u64, m: u64) -> u64 {
    let (mut r0, mut r1) = (i128::from(m), i128::from(a % m));
    let (mut t0, mut t1) = (0_i128, 1_i128);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(i128::from(m)) as u64
}

#[cfg(test)]
mod tests {
    use super::UserOrder;

    #[test]
    fn each_round_reaches_every_user_once_and_positions_invert_it() {
        for users in [1, 2, 3, 6, 10, 97, 100, 1000, 50_000] {
            let order = UserOrder::new(users);
            let mut seen = vec![false; users as usize];
            for seq in 0..users {
                let u = order.user(seq);
                assert!(!seen[u as usize], "users={users}: user {u} twice");
                seen[u as usize] = true;
                assert_eq!(order.position(u), seq, "users={users}");
                assert_eq!(order.user(seq + users), u, "users={users}: next round");
            }
        }
    }

    #[test]
    fn consecutive_notifications_go_to_users_far_apart() {
        let users = 50_000;
        let order = UserOrder::new(users);
        // Six contiguous ranges, as six subscriber processes hold them.
        let range = |u: u64| u / users.div_ceil(6);
        let mut per_range = [0_u32; 6];
        for seq in 0..600 {
            per_range[range(order.user(seq)) as usize] += 1;
        }
        assert!(
            per_range.iter().all(|&n| (80..=120).contains(&n)),
            "{per_range:?}"
        );
    }
}
