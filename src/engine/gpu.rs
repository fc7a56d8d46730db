//! What GPUs this machine has, as far as the driver tools say: `nvidia-smi` where present, else
//! a Jetson's device-tree model name. Used by `imexdepth info` and to key TensorRT caches.

use std::process::Command;

/// One GPU.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Gpu {
    pub name: String,
    /// Total memory as reported (`"81559 MiB"`), if known.
    pub memory: Option<String>,
    pub driver: Option<String>,
    /// CUDA compute capability (`"8.7"`), if known.
    pub compute_capability: Option<String>,
}

/// The GPUs `nvidia-smi` lists, else a Jetson's model name, else none.
pub fn gpus() -> Vec<Gpu> {
    let from_smi = nvidia_smi();
    if !from_smi.is_empty() {
        return from_smi;
    }
    jetson_model()
        .map(|name| Gpu { name, memory: None, driver: None, compute_capability: None })
        .into_iter()
        .collect()
}

/// The first GPU's name, or `"cpu-only"`.
pub fn primary_gpu_name() -> String {
    gpus().into_iter().next().map(|g| g.name).unwrap_or_else(|| "cpu-only".into())
}

fn nvidia_smi() -> Vec<Gpu> {
    let output = Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total,driver_version,compute_cap", "--format=csv,noheader"])
        .output();
    match output {
        Ok(out) if out.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout)),
        _ => Vec::new(),
    }
}

pub(crate) fn parse_nvidia_smi(csv: &str) -> Vec<Gpu> {
    let field = |s: Option<&str>| {
        s.map(str::trim).filter(|v| !v.is_empty() && !v.starts_with('[')).map(String::from)
    };
    csv.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.split(',');
            Gpu {
                name: parts.next().unwrap_or("").trim().to_string(),
                memory: field(parts.next()),
                driver: field(parts.next()),
                compute_capability: field(parts.next()),
            }
        })
        .collect()
}

fn jetson_model() -> Option<String> {
    let raw = std::fs::read("/proc/device-tree/model").ok()?;
    let name = String::from_utf8_lossy(&raw).trim_end_matches('\0').trim().to_string();
    name.to_ascii_lowercase().contains("jetson").then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nvidia_smi_csv() {
        let csv = "NVIDIA H200, 143771 MiB, 570.86.15, 9.0\nOrin, [N/A], 540.4.0, 8.7\n";
        let gpus = parse_nvidia_smi(csv);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "NVIDIA H200");
        assert_eq!(gpus[0].memory.as_deref(), Some("143771 MiB"));
        assert_eq!(gpus[1].memory, None);
        assert_eq!(gpus[1].compute_capability.as_deref(), Some("8.7"));
    }
}
