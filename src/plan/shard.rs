//! Shards: a plan split across hosts. Shard `I` of `N` takes the plan's
//! units (machines, then disks of no machine, in plan order) whose position
//! `k` has `k mod N == I`: a machine's disks stay together, shards differ by
//! at most one unit, and every unit is in exactly one shard. The split
//! depends only on the plan's order, so every host computes the same one.

use std::fmt;
use std::str::FromStr;

use super::model::{Plan, Unit};

/// Where Kubernetes Indexed Jobs put a pod's index.
pub const K8S_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Where AWS Batch array jobs put a child's index.
pub const BATCH_INDEX_ENV: &str = "AWS_BATCH_JOB_ARRAY_INDEX";
/// The number of shards, as the manifests set it.
pub const COUNT_ENV: &str = "EBS2AZURE_SHARD_COUNT";

/// One shard of a plan: `index` of `count`, 0-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard, 0-based.
    pub index: u32,
    /// How many shards there are.
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("shard {s:?} is not I/N with 0 <= I < N, such as 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| bad())?,
            n.trim().parse::<u32>().map_err(|_| bad())?,
        );
        Shard::new(index, count).ok_or_else(bad)
    }
}

impl Shard {
    /// Shard `index` of `count`, if that is one.
    pub fn new(index: u32, count: u32) -> Option<Shard> {
        (count > 0 && index < count).then_some(Shard { index, count })
    }

    /// The shard a scheduler gave this process: the index from
    /// [`K8S_INDEX_ENV`] or [`BATCH_INDEX_ENV`], the count from `count` or
    /// [`COUNT_ENV`]. `None` when no index is set (the whole plan).
    pub fn from_env(
        count: Option<u32>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Shard>, String> {
        let Some((var, index)) = [K8S_INDEX_ENV, BATCH_INDEX_ENV]
            .into_iter()
            .find_map(|v| env(v).map(|x| (v, x)))
        else {
            return Ok(None);
        };
        let index: u32 = index
            .trim()
            .parse()
            .map_err(|_| format!("{var}={index:?} is not a shard index"))?;
        let count = match count {
            Some(n) => n,
            None => {
                let n = env(COUNT_ENV).ok_or_else(|| {
                    format!("{var} is set, so this is shard {index} of a sharded run, but the number of shards is not: set {COUNT_ENV}")
                })?;
                n.trim()
                    .parse()
                    .map_err(|_| format!("{COUNT_ENV}={n:?} is not a number of shards"))?
            }
        };
        Shard::new(index, count)
            .map(Some)
            .ok_or_else(|| format!("{var}={index} is not below the {count} shards"))
    }

    /// The disks of `plan` (indexes) this shard moves, machines together.
    pub fn disks(&self, plan: &Plan) -> Vec<usize> {
        let mut out = Vec::new();
        for (k, unit) in plan.units().into_iter().enumerate() {
            if k as u32 % self.count != self.index {
                continue;
            }
            match unit {
                Unit::Machine(m) => out.extend(&m.disks),
                Unit::Disk(i) => out.push(i),
            }
        }
        out
    }

    /// The state subdirectory of this shard.
    pub fn dir_name(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::schema::Common;

    #[test]
    fn shards_cover_the_plan_once_and_keep_machines_together() {
        let mut text = String::from("[defaults]\nsubscription = \"00000000-0000-0000-0000-000000000001\"\nresource_group = \"rg\"\nlocation = \"westeurope\"\n");
        for m in 0..7 {
            text += &format!("[[machine]]\nname = \"m{m}\"\n[[machine.disk]]\nrole = \"os\"\nsnapshot = \"snap-{m:06x}00\"\n[[machine.disk]]\nsnapshot = \"snap-{m:06x}01\"\n");
        }
        text += "[[disk]]\nname = \"lone\"\nsnapshot = \"snap-000000ff\"\n";
        let plan = Plan::parse(&text, "p", &Common::default()).unwrap();
        for n in 1..=9 {
            let mut seen = vec![0; plan.disks.len()];
            for i in 0..n {
                let disks = Shard::new(i, n).unwrap().disks(&plan);
                for d in &disks {
                    seen[*d] += 1;
                }
                // A machine's disks are on one shard.
                for m in &plan.machines {
                    let here = m.disks.iter().filter(|d| disks.contains(d)).count();
                    assert!(here == 0 || here == m.disks.len());
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{n}: {seen:?}");
        }
    }

    #[test]
    fn the_scheduler_gives_the_index() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Shard::from_env(None, env(&[])).unwrap(), None);
        assert_eq!(
            Shard::from_env(Some(4), env(&[(K8S_INDEX_ENV, "2")])).unwrap(),
            Shard::new(2, 4)
        );
        assert_eq!(
            Shard::from_env(None, env(&[(BATCH_INDEX_ENV, "1"), (COUNT_ENV, "3")])).unwrap(),
            Shard::new(1, 3)
        );
        assert!(Shard::from_env(None, env(&[(BATCH_INDEX_ENV, "1")])).is_err());
        assert!(Shard::from_env(Some(2), env(&[(K8S_INDEX_ENV, "2")])).is_err());
        assert!("3/2".parse::<Shard>().is_err());
        assert_eq!("1/2".parse::<Shard>().unwrap().to_string(), "1/2");
    }
}
