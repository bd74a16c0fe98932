//! The CRD YAML checked in under charts/weir/crds must be exactly what crdgen generates today.

#[test]
fn checked_in_crds_equal_generated() {
    let dir = weir_crds::chart_crds_dir();
    let mut expected_files: Vec<String> = Vec::new();
    for (file, crd) in weir_crds::all_crds() {
        let path = dir.join(&file);
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `cargo run -p weir-crds --bin crdgen`", path.display()));
        assert!(
            on_disk == weir_crds::crd_yaml(&crd),
            "{} differs from the generated CRD; run `cargo run -p weir-crds --bin crdgen`",
            path.display()
        );
        expected_files.push(file);
    }
    // No stale CRD of a removed kind lingers in the chart.
    let mut present: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    present.sort();
    expected_files.sort();
    assert_eq!(present, expected_files, "files in {} other than the generated CRDs", dir.display());
}

#[test]
fn every_crd_is_weir_dev_v1alpha1_with_status_subresource() {
    let crds = weir_crds::all_crds();
    let kinds: Vec<&str> = crds.iter().map(|(_, c)| c.spec.names.kind.as_str()).collect();
    assert_eq!(kinds, ["Topic", "Queue", "Exchange", "Binding"]);
    for (_, crd) in crds {
        assert_eq!(crd.spec.group, "weir.dev");
        assert_eq!(crd.spec.versions.len(), 1);
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        assert!(
            v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{} has no status subresource",
            crd.spec.names.kind
        );
        let columns: Vec<&str> =
            v.additional_printer_columns.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
        assert!(columns.contains(&"Ready") && columns.contains(&"Age"), "{columns:?}");
    }
}
