//! Splitting one decision by Redis Cluster hash slot, and putting the answers back together.

use redis::cluster_routing::Slot;

use crate::Error;

/// The indices of `keys` grouped by hash slot, groups in the order their first key appears.
pub(super) fn groups(keys: impl Iterator<Item = String>) -> Vec<Vec<usize>> {
    let mut slots: Vec<(Slot, Vec<usize>)> = Vec::new();
    for (i, key) in keys.enumerate() {
        let slot = Slot::for_key(key.as_bytes());
        match slots.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, members)) => members.push(i),
            None => slots.push((slot, vec![i])),
        }
    }
    slots.into_iter().map(|(_, members)| members).collect()
}

/// The items of `group`.
pub(super) fn members<'a, T>(
    items: &'a [T],
    group: &'a [usize],
) -> impl Iterator<Item = &'a T> + Clone {
    group.iter().map(|&i| &items[i])
}

/// Whether a script reply admits every one of its keys (and so consumed, for a check).
pub(super) fn all_admitted(reply: &[i64]) -> bool {
    reply
        .get(1..)
        .is_some_and(|rest| rest.chunks(4).all(|v| v[0] == 1))
}

/// One reply for `len` keys from the replies of their `groups`: the first group's time, then
/// each key's four values in the keys' order. The first failed group's error, if any.
pub(super) fn merge(
    len: usize,
    groups: &[Vec<usize>],
    replies: Vec<Result<Vec<i64>, Error>>,
) -> Result<Vec<i64>, Error> {
    let mut merged = vec![0; 1 + 4 * len];
    for (n, (group, reply)) in groups.iter().zip(replies).enumerate() {
        let reply = reply?;
        if reply.len() != 1 + 4 * group.len() {
            return Err(Error::backend(
                format!("unexpected script reply of {} values", reply.len()),
                false,
            ));
        }
        if n == 0 {
            merged[0] = reply[0];
        }
        for (&key, values) in group.iter().zip(reply[1..].chunks_exact(4)) {
            merged[1 + 4 * key..5 + 4 * key].copy_from_slice(values);
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_tag_share_a_group_and_order_is_kept() {
        let keys = ["p:{a}", "p:{b}", "q:{a}", "p:{c}", "r:{b}"].map(String::from);
        let groups = groups(keys.into_iter());
        assert_eq!(groups, vec![vec![0, 2], vec![1, 4], vec![3]]);
    }

    #[test]
    fn replies_go_back_in_key_order() {
        let groups = vec![vec![0, 2], vec![1]];
        let replies = vec![
            Ok(vec![7, 1, 10, 0, -1, 0, 0, 5, 5]),
            Ok(vec![8, 1, 20, 0, -1]),
        ];
        assert_eq!(
            merge(3, &groups, replies).expect("well formed"),
            vec![7, 1, 10, 0, -1, 1, 20, 0, -1, 0, 0, 5, 5]
        );
        let short = vec![Ok(vec![7, 1, 10, 0, -1]), Ok(vec![8, 1, 20, 0, -1])];
        assert!(merge(3, &groups, short).is_err());
    }

    #[test]
    fn a_reply_admits_only_if_every_key_does() {
        assert!(all_admitted(&[0, 1, 3, 0, -1, 1, 0, 0, -1]));
        assert!(!all_admitted(&[0, 1, 3, 0, -1, 0, 0, 5, 5]));
    }
}
