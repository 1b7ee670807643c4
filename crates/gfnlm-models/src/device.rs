//! Run-time device selection from a `--device` string.

#![allow(deprecated)] // burn 0.22 deprecates the libtorch constructors; they are still the way in.

use burn::tensor::Device;

/// The backends compiled into this build, as accepted by [`parse_device`].
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "tch") {
        v.extend(["tch", "tch-cuda[:N]"]);
    }
    if cfg!(feature = "cuda") {
        v.push("cuda[:N]");
    }
    v
}

/// Parses `flex | wgpu | tch | tch-cuda[:N] | cuda[:N]` into a [`Device`].
///
/// Asking for a backend this binary was built without gives an error that lists the
/// compiled-in ones and the cargo feature to enable.
pub fn parse_device(spec: &str) -> Result<Device, String> {
    let (name, index) = match spec.split_once(':') {
        Some((n, i)) => {
            let idx: usize = i
                .parse()
                .map_err(|_| format!("device '{spec}': '{i}' is not a device index"))?;
            (n, Some(idx))
        }
        None => (spec, None),
    };
    let missing = |feature: &str| {
        format!(
            "device '{spec}' is not compiled into this build (compiled in: {}); rebuild with `--features {feature}`",
            compiled_backends().join(", ")
        )
    };
    match name {
        "flex" | "cpu" => {
            #[cfg(feature = "flex")]
            {
                let _ = index;
                Ok(Device::flex())
            }
            #[cfg(not(feature = "flex"))]
            Err(missing("flex"))
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            {
                let _ = index;
                Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
            }
            #[cfg(not(feature = "wgpu"))]
            Err(missing("wgpu"))
        }
        "tch" => {
            #[cfg(feature = "tch")]
            {
                let _ = index;
                Ok(Device::libtorch())
            }
            #[cfg(not(feature = "tch"))]
            Err(missing("tch"))
        }
        "tch-cuda" => {
            #[cfg(feature = "tch")]
            {
                Ok(Device::libtorch_cuda(index.unwrap_or(0)))
            }
            #[cfg(not(feature = "tch"))]
            Err(missing("tch"))
        }
        "cuda" => {
            #[cfg(feature = "cuda")]
            {
                Ok(Device::cuda(index.unwrap_or(0)))
            }
            #[cfg(not(feature = "cuda"))]
            Err(missing("cuda"))
        }
        other => Err(format!(
            "unknown device '{other}': expected one of flex, wgpu, tch, tch-cuda[:N], cuda[:N] (compiled in: {})",
            compiled_backends().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_device_lists_choices() {
        let err = parse_device("tpu").unwrap_err();
        assert!(
            err.contains("unknown device 'tpu'") && err.contains("flex"),
            "{err}"
        );
    }

    #[test]
    fn bad_index_is_named() {
        let err = parse_device("cuda:x").unwrap_err();
        assert!(err.contains("'x' is not a device index"), "{err}");
    }

    #[cfg(all(feature = "flex", not(feature = "cuda")))]
    #[test]
    fn backend_not_compiled_in_names_the_feature() {
        let err = parse_device("cuda:1").unwrap_err();
        assert!(
            err.contains("--features cuda") && err.contains("compiled in: flex"),
            "{err}"
        );
        assert!(parse_device("flex").is_ok());
    }
}
