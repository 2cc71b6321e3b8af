//! A task's size as ECS writes it: cpu in units or vCPU, memory in MiB
//! or GB, and the combinations Fargate runs.

use crate::core::taskdef::MAX_MEMORY_MIB;
use crate::error::ApiError;

/// Task cpu: units (`"256"`) or vCPU (`"0.25 vCPU"`, `"1 vcpu"`).
pub fn parse_task_cpu(s: &str) -> Result<u32, ApiError> {
    let bad = || {
        ApiError::client(format!(
            "Invalid 'cpu' setting for task: {s:?} is neither CPU units (\"256\") nor vCPU (\"0.25 vCPU\")."
        ))
    };
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let units = if let Some(v) = lower.strip_suffix("vcpu") {
        let vcpu: f64 = v.trim().parse().map_err(|_| bad())?;
        (vcpu * 1024.0).round()
    } else {
        t.parse::<u32>().map_err(|_| bad())? as f64
    };
    if !(128.0..=196_608.0).contains(&units) {
        return Err(ApiError::client(format!(
            "Invalid 'cpu' setting for task: {s:?} must be between 128 units (0.125 vCPU) and 192 vCPU."
        )));
    }
    Ok(units as u32)
}

/// Task memory: MiB (`"512"`) or GB (`"1 GB"`, `"0.5GB"`).
pub fn parse_task_memory(s: &str) -> Result<u32, ApiError> {
    let bad = || {
        ApiError::client(format!(
            "Invalid 'memory' setting for task: {s:?} is neither MiB (\"512\") nor GB (\"1 GB\")."
        ))
    };
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let mib = if let Some(v) = lower.strip_suffix("gb") {
        let gb: f64 = v.trim().parse().map_err(|_| bad())?;
        (gb * 1024.0).round()
    } else {
        t.parse::<u32>().map_err(|_| bad())? as f64
    };
    if !(6.0..=f64::from(MAX_MEMORY_MIB)).contains(&mib) {
        return Err(ApiError::client(format!(
            "Invalid 'memory' setting for task: {s:?} must be between 6 MiB and 1 TiB."
        )));
    }
    Ok(mib as u32)
}

/// Fargate's cpu → memory table: the memory values (MiB) allowed with each
/// cpu value (units).
pub fn fargate_memory_options(cpu: u32) -> Option<Vec<u32>> {
    let range = |lo: u32, hi: u32, step: u32| (lo..=hi).step_by(step as usize).collect();
    Some(match cpu {
        256 => vec![512, 1024, 2048],
        512 => range(1024, 4096, 1024),
        1024 => range(2048, 8192, 1024),
        2048 => range(4096, 16384, 1024),
        4096 => range(8192, 30720, 1024),
        8192 => range(16384, 61440, 4096),
        16384 => range(32768, 122_880, 8192),
        _ => return None,
    })
}

/// Checks a task's cpu and memory against Fargate's table.
pub fn check_fargate_size(cpu: Option<u32>, memory: Option<u32>) -> Result<(), ApiError> {
    let (Some(cpu), Some(memory)) = (cpu, memory) else {
        return Err(ApiError::client(
            "Fargate requires task definition to have cpu and memory set at the task level.",
        ));
    };
    let Some(options) = fargate_memory_options(cpu) else {
        return Err(ApiError::client(format!(
            "No Fargate configuration exists for cpu {cpu}: use 256, 512, 1024, 2048, 4096, 8192 or 16384."
        )));
    };
    if !options.contains(&memory) {
        return Err(ApiError::client(format!(
            "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. With {cpu} CPU units memory must be one of {options:?} MiB."
        )));
    }
    Ok(())
}
