//! Everything the command prints: the text and JSON forms of each
//! command's result on standard output, and its error on standard error.

use ebs2azure::convert::Report;
use ebs2azure::diskformats::TypeId;
use ebs2azure::fixup::{apply, inspect, Class};
use ebs2azure::info::{Info, SnapshotInfo};
use ebs2azure::{os_disk, upload, verify};
use indicatif::HumanBytes;

/// Prints a line to standard output; a reader that went away (`| head`)
/// ends the program quietly, as for any Unix filter, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

/// Prints a note or warning on standard error, unless `--quiet`.
macro_rules! note {
    ($($arg:tt)*) => {{
        if crate::progress::chatty() {
            eprintln!($($arg)*);
        }
    }};
}

/// A note on standard error (where a result was written, ...), unless `--quiet`.
pub fn note_line(message: &str) {
    note!("{message}");
}

/// Version of the JSON this program prints; every JSON object it prints
/// carries it as `schema_version`, and it changes only when a field
/// changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// Set when the command was asked for `--json`: errors are JSON too.
static JSON_ERRORS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Errors as JSON objects (`{"schema_version": 1, "error": "..."}`) from now on.
pub fn set_json_errors(on: bool) {
    JSON_ERRORS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Prints the command's error, one sentence (a JSON object under `--json`).
pub fn error(message: &str) {
    if JSON_ERRORS.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!(
            "{}",
            serde_json::json!({"schema_version": SCHEMA_VERSION, "error": message})
        );
    } else {
        eprintln!("error: {message}");
    }
}

/// Prints a conversion's summary, as text or JSON.
pub fn print_convert(r: &Report, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(r)?);
    } else {
        print_report(r);
    }
    Ok(())
}

pub fn print_report(r: &Report) {
    // Notes and warnings are not the result: standard error.
    if r.rounded_up {
        note!(
            "note: virtual size rounded up from {} to {} bytes (a whole MiB, as Azure requires){}",
            r.source_size,
            r.virtual_size,
            if r.gpt_backup_moved {
                "; the backup GPT was moved to the new end of the disk"
            } else {
                ""
            }
        );
    }
    for w in &r.warnings {
        note!("warning: {w}");
    }
    if let Some(e) = r
        .ebs
        .as_ref()
        .filter(|e| e.retries + e.tokens_refreshed > 0)
    {
        note!(
            "note: {} retries ({} throttled), {} block tokens refreshed, {} checksum mismatches fetched again",
            e.retries, e.throttled, e.tokens_refreshed, e.checksum_mismatches
        );
    }
    out!(
        "{} -> {} ({}, {}): read {}, wrote {}, skipped {} of zeros, in {:.2} s ({:.0} MiB/s)",
        r.input,
        r.output,
        r.output_format,
        HumanBytes(r.virtual_size),
        HumanBytes(r.stats.bytes_read),
        HumanBytes(r.stats.bytes_written),
        HumanBytes(r.stats.bytes_zero),
        r.seconds,
        r.throughput_mib_s
    );
    if let Some(f) = &r.fixup {
        out!("fix-up report:");
        print_fixup_changes(f);
    }
}

pub fn print_info(i: &Info, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(i)?);
        return Ok(());
    }
    out!("file:            {}", i.path);
    out!("format:          {}", i.format);
    out!(
        "virtual size:    {} ({} bytes)",
        HumanBytes(i.virtual_size),
        i.virtual_size
    );
    out!("file size:       {} bytes", i.file_size);
    out!(
        "allocated:       {} ({} bytes)",
        HumanBytes(i.allocated_bytes),
        i.allocated_bytes
    );
    if let Some(f) = &i.footer {
        out!("VHD footer:");
        out!("  disk type:     {}", f.disk_type);
        out!("  current size:  {}", f.current_size);
        out!("  original size: {}", f.original_size);
        out!(
            "  geometry:      {}/{}/{} (C/H/S, {} bytes)",
            f.cylinders,
            f.heads,
            f.sectors_per_track,
            f.geometry_size
        );
        out!(
            "  creator:       {:?} {} on {:?}",
            f.creator_application,
            f.creator_version,
            f.creator_host_os
        );
        out!("  timestamp:     {}", f.timestamp);
        out!("  unique id:     {}", f.unique_id);
        out!(
            "  checksum:      {} ({})",
            f.checksum,
            if f.checksum_valid { "valid" } else { "INVALID" }
        );
        out!(
            "  features:      {:#010x}, version {}, data offset {}, saved state {}",
            f.features,
            f.format_version,
            f.data_offset,
            f.saved_state
        );
    }
    if let Some(d) = &i.dynamic {
        out!(
            "dynamic header:  block size {}, {} BAT entries at {:#x}, {} allocated",
            HumanBytes(u64::from(d.block_size)),
            d.max_table_entries,
            d.table_offset,
            d.allocated_blocks
        );
    }
    out!("partition table: {}", i.partition_table);
    for p in &i.partitions {
        out!(
            "  {:>3}  start {:>14}  size {:>12}  {}{}{}",
            p.number,
            p.start,
            HumanBytes(p.size).to_string(),
            match p.type_id {
                // An MBR type byte says more than its name ("FAT32 (0x0c)").
                TypeId::Mbr(b) => format!("{} (0x{b:02x})", p.kind),
                TypeId::Gpt(_) => p.kind.to_string(),
            },
            if p.name.is_empty() {
                String::new()
            } else {
                format!("  \"{}\"", p.name)
            },
            p.guid
                .as_deref()
                .map(|g| format!("  {g}"))
                .unwrap_or_default()
        );
    }
    for p in &i.problems {
        out!("problem: {p}");
    }
    if i.azure_upload_problems.is_empty() {
        out!("azure:           ready to upload as a managed disk");
    } else {
        for p in &i.azure_upload_problems {
            out!("azure:           {p}");
        }
    }
    Ok(())
}

pub fn print_snapshot_info(i: &SnapshotInfo, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(i)?);
        return Ok(());
    }
    out!("snapshot:        {} ({})", i.snapshot, i.region);
    out!(
        "volume size:     {} ({} bytes)",
        HumanBytes(i.volume_size),
        i.volume_size
    );
    out!("block size:      {} bytes", i.block_size);
    out!(
        "written blocks:  {} ({}, {:.1}% of the volume)",
        i.blocks,
        HumanBytes(i.allocated_bytes),
        100.0 * i.allocated_bytes as f64 / i.volume_size.max(1) as f64
    );
    Ok(())
}

/// `v` as pretty JSON, with the schema version first when it is an object.
fn to_json<T: serde::Serialize>(v: &T) -> Result<String, String> {
    let v = versioned(serde_json::to_value(v).map_err(|e| format!("cannot print JSON: {e}"))?);
    serde_json::to_string_pretty(&v).map_err(|e| format!("cannot print JSON: {e}"))
}

fn versioned(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(fields) => {
            let mut out = serde_json::Map::new();
            out.insert("schema_version".into(), SCHEMA_VERSION.into());
            out.extend(fields);
            serde_json::Value::Object(out)
        }
        other => other,
    }
}

pub fn print_os_disk(r: &os_disk::Report, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(r)?);
        return Ok(());
    }
    if let Some(staging) = &r.staging {
        print_report(staging);
    }
    out!(
        "fix-up report ({}):",
        r.fixup
            .inspection
            .os
            .as_ref()
            .map_or("unknown OS", |o| o.name.as_str())
    );
    print_fixup(&r.fixup, false)?;
    print_upload(&r.upload, false)?;
    out!(
        "staged copy {}: {}; content digest {}",
        r.staged,
        if r.staged_kept { "kept" } else { "removed" },
        r.digest
    );
    Ok(())
}

pub fn print_upload(r: &upload::Report, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(r)?);
        return Ok(());
    }
    out!(
        "{} -> {}: {} sent in {} requests ({} zero skipped{}), {:.1} s in all, the copy {:.1} s at {:.1} MiB/s; disk {} ({}); credential: {}",
        r.source,
        r.disk,
        HumanBytes(r.upload.bytes_sent),
        r.upload.put_requests,
        HumanBytes(r.copy.bytes_zero + (r.virtual_size - r.copy.bytes_read.min(r.virtual_size))),
        if r.resumed {
            format!(", {} already there", HumanBytes(r.upload.bytes_already_there))
        } else {
            String::new()
        },
        r.seconds,
        r.copy_seconds,
        r.throughput_mib_s,
        r.state,
        HumanBytes(r.virtual_size),
        r.credential
    );
    Ok(())
}

pub fn print_verify(
    r: &verify::VerifyReport,
    name: &str,
    verbose: bool,
    json: bool,
) -> Result<(), String> {
    if json {
        out!("{}", to_json(r)?);
    } else {
        for c in verify::coalesce(&r.ranges) {
            if verbose || !c.matches {
                out!(
                    "{} {}..{} ({}){}",
                    if c.matches { "match   " } else { "MISMATCH" },
                    c.offset,
                    c.offset + c.len,
                    HumanBytes(c.len),
                    match c.source_holds {
                        verify::SourceHolds::Data => "",
                        verify::SourceHolds::Zeros => " where the source is zero",
                    }
                );
            }
        }
        let count = |holds, matches| {
            r.ranges
                .iter()
                .filter(|c| c.source_holds == holds && (matches || !c.matches))
                .count()
        };
        let not_zero = count(verify::SourceHolds::Zeros, false);
        out!(
            "{}: {} ranges, {} compared, {} differ; footer {}; {} written outside the source's data, {}",
            name,
            count(verify::SourceHolds::Data, true),
            HumanBytes(r.bytes_compared),
            r.mismatches,
            if r.footer_ok { "ok" } else { "WRONG" },
            HumanBytes(r.bytes_outside_data),
            match not_zero {
                0 => "all zero".to_owned(),
                n => format!("{n} ranges of it not zero"),
            }
        );
    }
    if r.mismatches > 0 || !r.footer_ok {
        return Err(format!(
            "disk {name} differs from {} ({} ranges differ{})",
            r.source,
            r.mismatches,
            if r.footer_ok { "" } else { ", footer wrong" }
        ));
    }
    Ok(())
}

pub fn print_inspect(r: &inspect::Report, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(r)?);
        return Ok(());
    }
    out!("image:           {}", r.image);
    out!("partition table: {}", r.table);
    for p in &r.partitions {
        out!(
            "  {:>2}  {:>10}  {:<18} {:<12} {}{}",
            p.number,
            HumanBytes(p.size).to_string(),
            p.kind,
            p.fs.kind,
            p.fs.uuid
                .as_deref()
                .map(|u| format!("UUID={u}"))
                .unwrap_or_default(),
            p.fs.label
                .as_deref()
                .map(|l| format!(" LABEL={l}"))
                .unwrap_or_default()
        );
    }
    if let Some(os) = &r.os {
        out!("os:              {} ({} {})", os.name, os.id, os.version);
    }
    if let Some(n) = r.root_partition {
        out!("root partition:  {n}");
    }
    if let Some(w) = &r.windows {
        out!(
            "windows:         {} {}, control set {:03} (default {:03})",
            w.edition,
            w.installation_type,
            w.current_control_set,
            w.default_control_set
        );
    }
    // A generation is advice for an OS disk only.
    if r.root_partition.is_some() {
        out!(
            "boot mode:       {} (create the disk with --hyper-v-generation {})",
            r.boot_mode,
            r.hyper_v_generation
        );
    } else {
        out!("boot mode:       {} (no OS found)", r.boot_mode);
    }
    for k in &r.kernels {
        out!(
            "kernel:          {} (Hyper-V drivers built in: {}; as modules: {}; initramfs: {}{})",
            k.version,
            if k.built_in.is_empty() {
                "none".into()
            } else {
                k.built_in.join(" ")
            },
            if k.modules.is_empty() {
                "none".into()
            } else {
                k.modules.join(" ")
            },
            k.initramfs.as_deref().unwrap_or("none"),
            match &k.in_initramfs {
                Some(d) if d.is_empty() => " holding none of them".to_owned(),
                Some(d) => format!(" holding {}", d.join(" ")),
                None => String::new(),
            }
        );
    }
    if r.windows.is_none() {
        out!("fstab entries:   {}", r.fstab.len());
        if let Some(ds) = &r.cloud_init_datasources {
            out!("cloud-init:      datasource_list {ds}");
        }
        out!(
            "azure agent:     {}",
            if r.azure_agent {
                "installed"
            } else {
                "not installed"
            }
        );
    }
    out!("findings:");
    for f in &r.findings {
        let class = match f.class {
            Class::Blocker => "BLOCKER",
            Class::Fixup => "fix-up ",
            Class::Advice => "advice ",
        };
        out!("  {class}  {}: {}", f.subject, f.message);
    }
    if r.findings.iter().any(|f| f.class == Class::Fixup) {
        out!("(`ebs2azure fixup IMAGE` makes the fix-ups it can; --dry-run shows them first)");
    }
    Ok(())
}

pub fn print_fixup(r: &apply::Report, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(r)?);
    } else {
        print_fixup_changes(r);
    }
    Ok(())
}

/// The changes of a fix-up, then the blockers it cannot fix, one line each.
pub fn print_fixup_changes(r: &apply::Report) {
    let verb = if r.dry_run { "would change" } else { "changed" };
    if r.changes.is_empty() {
        out!("  nothing to change");
    }
    for c in &r.changes {
        let state = match (&c.before, &c.after) {
            (None, _) => "created".to_owned(),
            (_, None) => format!("removed (kept as {})", c.original.as_deref().unwrap_or("-")),
            _ => format!(
                "edited (original kept as {})",
                c.original.as_deref().unwrap_or("-")
            ),
        };
        out!("  {verb} {}: {state}; {}", c.path, c.reason);
        for n in &c.notes {
            out!("      {n}");
        }
    }
    for f in &r.inspection.findings {
        match f.class {
            Class::Blocker => out!("  BLOCKER (not fixed here)  {}: {}", f.subject, f.message),
            Class::Advice => out!("  advice  {}: {}", f.subject, f.message),
            Class::Fixup => {}
        }
    }
}

/// Prints `text` as it is (a plan for a pipe or a file).
pub fn text(text: &str) {
    out!("{}", text.trim_end());
}

/// Prints one JSON event on its own line (a plan run's `--json`).
pub fn event(v: &serde_json::Value) {
    out!("{}", versioned(v.clone()));
}

/// Prints what `plan validate` found.
pub fn print_validation(
    file: &std::path::Path,
    plan: Option<&ebs2azure::plan::Plan>,
    problems: &[ebs2azure::plan::model::Problem],
    offline: bool,
    json: bool,
) -> Result<(), String> {
    if json {
        let v = serde_json::json!({
            "plan": file.display().to_string(),
            "valid": problems.is_empty(),
            "digest": plan.map(|p| p.digest.clone()),
            "machines": plan.map_or(0, |p| p.machines.len()),
            "disks": plan.map_or(0, |p| p.disks.len()),
            "excluded": plan.map_or(0, |p| p.disks.iter().filter(|d| d.exclude).count()),
            "snapshots_checked": !offline && plan.is_some(),
            "problems": problems,
            "proposals": plan.map(proposals).unwrap_or_default(),
        });
        out!("{}", to_json(&v)?);
        return Ok(());
    }
    for p in problems {
        out!("{}:{p}", file.display());
    }
    for line in plan.map(proposals).unwrap_or_default() {
        out!("{}: note: {line}", file.display());
    }
    if let (Some(p), true) = (plan, problems.is_empty()) {
        let excluded = p.disks.iter().filter(|d| d.exclude).count();
        out!(
            "{}: valid: {} machines, {} disks ({} excluded){}",
            file.display(),
            p.machines.len(),
            p.disks.len(),
            excluded,
            if offline {
                "; snapshots not checked (--offline)"
            } else {
                "; every snapshot exists and fits Azure"
            }
        );
    }
    Ok(())
}

/// Prints what `vm create` did per machine: (machine, made, VM id or
/// template path, or the error).
pub fn print_vm_results(
    results: &[(String, bool, String)],
    templates: bool,
    json: bool,
) -> Result<(), String> {
    if json {
        let v = serde_json::json!({
            "machines": results.iter().map(|(m, ok, r)| serde_json::json!({
                "machine": m,
                "ok": ok,
                if templates { "template" } else { "vm" }: if *ok { Some(r) } else { None },
                "error": if *ok { None } else { Some(r) },
            })).collect::<Vec<_>>(),
            "complete": results.iter().all(|r| r.1),
        });
        out!("{}", to_json(&v)?);
        return Ok(());
    }
    for (m, _, r) in results.iter().filter(|r| r.1) {
        out!("{m}\t{r}");
    }
    Ok(())
}

/// Prints what `cleanup --test` did with each resource.
pub fn print_cleanup(
    done: &[ebs2azure::machines::test_run::Cleaned],
    json: bool,
) -> Result<(), String> {
    if json {
        out!("{}", to_json(&serde_json::json!({ "resources": done }))?);
        return Ok(());
    }
    for c in done.iter().filter(|c| c.outcome != "absent") {
        out!("{}\t{}", c.outcome, c.id);
    }
    Ok(())
}

/// The VM sizes a plan proposes from EC2 instance types, one line each.
fn proposals(plan: &ebs2azure::plan::Plan) -> Vec<String> {
    plan.machines
        .iter()
        .filter(|m| m.vm.proposed)
        .filter_map(|m| {
            let size = ebs2azure::machines::sizes::find(m.vm.size.as_deref()?)?;
            Some(format!(
                "machine {}: vm_size {} ({} vCPU, {} GiB) is a proposal from instance type {}; set vm_size to confirm it or to choose another",
                m.name,
                size.name,
                size.vcpus,
                size.memory_gib,
                m.vm.instance_type.as_deref().unwrap_or("?")
            ))
        })
        .collect()
}

/// Prints a plan run's report, as text or JSON.
pub fn print_run_report(r: &ebs2azure::plan::RunReport, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(r)?);
    } else {
        out!("{}", r.markdown().trim_end());
    }
    Ok(())
}

/// The last JSON event of a plan run: the totals and where the report is.
pub fn print_run_end(r: &ebs2azure::plan::RunReport, dir: &std::path::Path) {
    event(&serde_json::json!({
        "event": "run_ended",
        "complete": r.complete,
        "totals": r.totals,
        "seconds": r.seconds,
        "report": dir.join(ebs2azure::plan::report::REPORT_JSON).display().to_string(),
    }));
}

/// Prints what `verify --digest` found; a difference is an error.
pub fn print_digest_check(r: &verify::DigestCheck, name: &str, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(r)?);
    } else {
        out!(
            "{name}: content digest {} ({} read back); footer {}",
            if r.matches { "matches" } else { "DIFFERS" },
            HumanBytes(r.bytes_read),
            if r.footer_ok { "ok" } else { "WRONG" }
        );
    }
    if r.matches && r.footer_ok {
        Ok(())
    } else {
        Err(format!(
            "disk {name} does not hold what was reported: digest {} instead of {}{}",
            r.actual,
            r.expected,
            if r.footer_ok {
                ""
            } else {
                ", and its VHD footer is wrong"
            }
        ))
    }
}

/// The assessments of `assess`: a line per machine, then what each needs.
pub fn print_assessments(all: &[ebs2azure::assess::Assessment], json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(&serde_json::json!({ "machines": all }))?);
        return Ok(());
    }
    for a in all {
        let size = match (&a.vm_size, a.vm_size_proposed) {
            (Some(s), true) => format!("{s} (proposed)"),
            (Some(s), false) => s.clone(),
            (None, _) => "no size".into(),
        };
        let read = a.reads.as_ref().map_or(String::new(), |r| {
            format!(
                "; read {} of {} written ({:.2}%)",
                HumanBytes(r.bytes_read),
                HumanBytes(r.written_bytes()),
                100.0 * r.bytes_read as f64 / r.written_bytes().max(1) as f64
            )
        });
        out!(
            "{}: {} — {}, generation {}, {size}{read}",
            a.machine,
            a.readiness,
            a.os.as_deref().unwrap_or("no OS found"),
            a.generation.map_or("?".to_owned(), |g| g.to_string()),
        );
        if let Some(e) = &a.error {
            out!("  error    {e}");
        }
        for b in &a.blockers {
            out!("  blocker  {b}");
        }
        for p in &a.size_problems {
            out!("  blocker  vm_size: {p}");
        }
        for f in &a.fixups {
            out!("  fix-up   {f}");
        }
        for f in &a.advice {
            out!("  advice   {f}");
        }
    }
    Ok(())
}
