//! `subsidyctl provider` against a fresh `subsidy dev`: a CSV file (with a BOM) imported all at
//! once and listed, imported again without change, a file with bad rows refused whole with each
//! row named, and a suspension shown in the provider's history.

mod support;

use serde_json::Value;
use support::{Dev, args, succeeded};

fn listed(dev: &Dev, extra: &[&str]) -> Value {
    let mut words = vec!["-o", "json", "provider", "list"];
    words.extend_from_slice(extra);
    serde_json::from_str(&succeeded(&dev.run(&args(&words)))).unwrap()
}

#[test]
fn providers_are_imported_from_csv_all_or_nothing_and_listed() {
    // Proves: an import registers every provider of the file with its data centers (capacities
    // canonical), a second import of the same file changes nothing, a file with bad rows exits
    // 4 naming each bad line and registers none of its providers, and a suspension shows in
    // `provider list --status suspended` and in `provider show`'s history.
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(&dir.path().join("data"));
    dev.wait_serving();
    let jinan = subsidy_common::uscc::complete("91370100MB0000901").to_string();
    let qingdao = subsidy_common::uscc::complete("91370200MB0000902").to_string();
    let file = dir.path().join("providers.csv");
    std::fs::write(
        &file,
        format!(
            "\u{feff}uscc,name,effective_date,reason,data_center_name,division_code,capacity_pflops,data_center_status\n\
             {jinan},济南智算有限公司,2025-01-01,省大数据局第1批,济南智算中心,370102,120.50,\n\
             {jinan},济南智算有限公司,2025-01-01,省大数据局第1批,济南备份中心,370112,10,retired\n\
             {qingdao},\"Qingdao Compute Co., Ltd.\",2025-02-01,第1批,青岛西海岸中心,370211,80,in-service\n"
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let imported = succeeded(&dev.run(&args(&["provider", "import", "--file", path])));
    assert_eq!(imported.matches("registered").count(), 2, "{imported}");

    let providers = listed(&dev, &[]);
    let providers = providers.as_array().unwrap();
    assert_eq!(providers.len(), 2, "{providers:?}");
    assert_eq!(providers[0]["uscc"], jinan.as_str());
    assert_eq!(providers[0]["status"], "PROVIDER_STATUS_ADMITTED");
    assert_eq!(providers[0]["dataCenters"][0]["capacityPflops"], "120.5");
    assert_eq!(
        providers[0]["dataCenters"][1]["status"],
        "DATA_CENTER_STATUS_RETIRED"
    );
    assert_eq!(providers[1]["name"], "Qingdao Compute Co., Ltd.");

    let again = succeeded(&dev.run(&args(&["provider", "import", "--file", path])));
    assert_eq!(again.matches("unchanged").count(), 2, "{again}");
    assert_eq!(listed(&dev, &[]).as_array().unwrap().len(), 2);

    let weifang = subsidy_common::uscc::complete("91370700MB0000903").to_string();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        format!(
            "uscc,name,effective_date,reason,data_center_name,division_code,capacity_pflops,data_center_status\n\
             {weifang},潍坊算力,2025-03-01,第2批,潍坊中心,370702,50,\n\
             {weifang}X,潍坊算力,2025-03-01,第2批,潍坊中心二,370702,50,\n\
             {weifang},潍坊算力,2025-03-01,第2批,潍坊中心三,3707,-1,\n"
        ),
    )
    .unwrap();
    let refused = dev.run(&args(&[
        "provider",
        "import",
        "--file",
        bad.to_str().unwrap(),
    ]));
    assert_eq!(refused.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for named in [
        "line 3: uscc",
        "line 4: division_code",
        "line 4: capacity_pflops",
    ] {
        assert!(stderr.contains(named), "{named} in {stderr}");
    }
    assert_eq!(listed(&dev, &[]).as_array().unwrap().len(), 2);

    succeeded(&dev.run(&args(&[
        "provider",
        "suspend",
        &qingdao,
        "--from",
        "2025-06-01",
        "--reason",
        "核查中",
    ])));
    let suspended = listed(&dev, &["--status", "suspended"]);
    let suspended = suspended.as_array().unwrap();
    assert_eq!(suspended.len(), 1);
    assert_eq!(suspended[0]["uscc"], qingdao.as_str());
    let shown: Value = serde_json::from_str(&succeeded(
        &dev.run(&args(&["-o", "json", "provider", "show", &qingdao])),
    ))
    .unwrap();
    let history = shown["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{shown}");
    assert_eq!(history[1]["status"], "PROVIDER_STATUS_SUSPENDED");
}
