//! `assess`: each machine's readiness, from its snapshots, without a copy.

use std::path::Path;
use std::process::ExitCode;

use ebs2azure::assess::{self, Readiness};
use ebs2azure::plan::Plan;
use ebs2azure::source::ebs::Quotas;

use crate::args::{AwsArgs, LimitArgs};
use crate::{print, said};

/// Runs `assess` and exits 3 when a machine is blocked or not assessed.
pub fn command(
    plan: &Path,
    machines: &[String],
    cache_mib: u64,
    aws: &AwsArgs,
    limits: &LimitArgs,
    json: bool,
) -> ExitCode {
    match run(plan, machines, cache_mib, aws, limits, json) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(message)) => {
            print::error(&message);
            ExitCode::from(crate::EXIT_BLOCKED)
        }
        Err(e) => {
            print::error(&e);
            ExitCode::FAILURE
        }
    }
}

fn run(
    plan: &Path,
    machines: &[String],
    cache_mib: u64,
    aws: &AwsArgs,
    limits: &LimitArgs,
    json: bool,
) -> Result<Option<String>, String> {
    let fallback = ebs2azure::plan::schema::Common {
        region: aws.region.clone(),
        ..Default::default()
    };
    let p = Plan::load(plan, &fallback).map_err(said)?;
    for m in machines {
        let known = p.machines.iter().any(|x| &x.name == m)
            || p.disks.iter().any(|d| d.machine.is_none() && &d.name == m);
        if !known {
            return Err(format!("the plan has no machine named {m:?}"));
        }
    }
    let opts = assess::Options {
        ebs: aws.settings(limits, None),
        quotas: Quotas::published(),
        cache_blocks: usize::try_from((cache_mib << 20) / (512 << 10))
            .unwrap_or(1)
            .max(1),
        mount_under: std::env::temp_dir(),
    };
    let all = assess::assess(&p, machines, &opts, &|m| {
        if crate::progress::shown() {
            print::note_line(m);
        }
    });
    if all.is_empty() {
        return Err("the plan has no OS disk to assess (every machine excluded?)".into());
    }
    print::print_assessments(&all, json)?;
    let not_ready = all
        .iter()
        .filter(|a| matches!(a.readiness, Readiness::Blocked | Readiness::NotAssessed))
        .count();
    Ok((not_ready > 0).then(|| {
        format!(
            "{not_ready} of {} machines are not ready for Azure as they are (the lines above say why)",
            all.len()
        )
    }))
}
