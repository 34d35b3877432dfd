//! Generates Rust from the `.proto` files with protox (a pure-Rust compiler), so that no system
//! `protoc` is needed, and writes the descriptor set used by server reflection (the subsidy
//! contract, the vendored `google.type` values it uses, and the `google.rpc` error details and
//! status its errors carry, so that generic tools decode them).

use std::path::{Path, PathBuf};

use protox::prost_reflect::{DescriptorPool, Value};

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    collect_protos(&root.join("subsidy"), &mut files)?;
    collect_protos(&root.join("google"), &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=subsidy");
    println!("cargo:rerun-if-changed=google");

    let mut compiler = protox::Compiler::new([&root])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(&files)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Encoded by the compiler, not through prost-types, which would drop the custom method
    // options (the access rules) that reflection clients and the access test read.
    std::fs::write(
        out_dir.join("subsidy_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    std::fs::write(
        out_dir.join("access_rules.rs"),
        access_rules(&compiler.descriptor_pool())?,
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // RPCs a service does not implement yet answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        // The vendored `google.rpc` files are in the set for reflection only: the services build
        // their error details with tonic-types, whose generated messages are these.
        .extern_path(".google.rpc", "::tonic_types::pb")
        .compile_fds_with_config(compiler.file_descriptor_set(), {
            // `prost::Name` on every message: `subsidyctl --output json` finds each message's
            // descriptor by its full name.
            let mut config = tonic_prost_build::Config::new();
            config.enable_type_names();
            config
        })?;
    Ok(())
}

/// The access rule of every RPC of the subsidy services as Rust: a sorted table of
/// `MethodAccess`. An RPC without a rule fails the build: deny by default starts here.
fn access_rules(pool: &DescriptorPool) -> Result<String, Box<dyn std::error::Error>> {
    let extension = pool
        .get_extension_by_name("subsidy.access.v1.access")
        .ok_or("subsidy.access.v1.access is not declared")?;
    let mut rows = Vec::new();
    for service in pool.services() {
        if !service.full_name().starts_with("subsidy.") {
            continue;
        }
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let options = method.options();
            if !options.has_extension(&extension) {
                return Err(format!("{path} declares no (subsidy.access.v1.access) option").into());
            }
            let rule = options.get_extension(&extension);
            let rule = rule.as_message().ok_or("the access option is a message")?;
            let names = |field: &str, prefix: &str, enum_name: &str| -> Result<String, String> {
                let value = rule
                    .get_field_by_name(field)
                    .ok_or_else(|| format!("Access has no field {field}"))?;
                let numbers = value.as_list().map(<[Value]>::to_vec).unwrap_or_default();
                let enumeration = pool
                    .get_enum_by_name(enum_name)
                    .ok_or_else(|| format!("{enum_name} is not declared"))?;
                let mut out = Vec::new();
                for number in numbers {
                    let number = number.as_enum_number().ok_or("an enum value")?;
                    let value = enumeration
                        .get_value(number)
                        .ok_or_else(|| format!("{path}: unknown {enum_name} {number}"))?;
                    let variant = value
                        .name()
                        .strip_prefix(prefix)
                        .ok_or("enum values carry their prefix")?;
                    out.push(format!(
                        "{}::{}",
                        enum_name.rsplit('.').next().unwrap_or_default(),
                        camel(variant)
                    ));
                }
                Ok(out.join(", "))
            };
            let roles = names("roles", "ROLE_", "subsidy.access.v1.Role")?;
            let services = names("services", "SERVICE_", "subsidy.access.v1.Service")?;
            let mutating = rule
                .get_field_by_name("mutating")
                .and_then(|value| value.as_bool())
                .unwrap_or(false);
            rows.push(format!(
                "    MethodAccess {{ path: {path:?}, roles: &[{roles}], services: &[{services}], mutating: {mutating}, server_streaming: {} }},\n",
                method.is_server_streaming()
            ));
        }
    }
    rows.sort();
    Ok(format!(
        "/// The access rule of every RPC, sorted by path (generated from the proto options).\n\
         pub static METHODS: &[MethodAccess] = &[\n{}];\n",
        rows.concat()
    ))
}

/// `APPLICANT` → `Applicant`, `SERVICE_APPLICATION` suffix `APPLICATION` → `Application`.
fn camel(upper_snake: &str) -> String {
    upper_snake
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_string() + &chars.as_str().to_lowercase(),
                None => String::new(),
            }
        })
        .collect()
}
