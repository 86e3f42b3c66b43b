use std::collections::BTreeMap;

use super::*;

fn sample(i: usize) -> Dataset {
    let mut d = Dataset::new(
        &format!("ds-{i}"),
        DatasetKind::Cube,
        &format!("s3://b/ds-{i}"),
        1_700_000_000_000 + i as i64,
    );
    d.description = Description {
        crs: Some("EPSG:4326".into()),
        bbox: Some([0.0, 1.0, 2.0, 3.0]),
        bbox_4326: Some([0.0, 1.0, 2.0, 3.0]),
        time_start: Some(10),
        time_end: i.is_multiple_of(2).then_some(20),
        dims: vec![
            Dim {
                name: "time".into(),
                size: 24,
            },
            Dim {
                name: "x".into(),
                size: 5,
            },
        ],
        variables: vec![Variable {
            name: "t2m".into(),
            units: i.is_multiple_of(3).then(|| "K".to_string()),
            dtype: "float32".into(),
        }],
        cell_size: Some([0.25, 0.25]),
        sources: vec!["a.grib".into(), "b.grib".into()],
    };
    d.attributes = BTreeMap::from([("source".to_string(), format!("src{}", i % 4))]);
    d
}

fn memory(name: &str) -> Catalog {
    Catalog::open(&format!("memory://catalog-test-{name}-{}", Uuid::new_v4()))
        .expect("memory store")
}

#[test]
fn records_survive_arrow_and_parquet() {
    let records: Vec<Dataset> = (0..7).map(sample).collect();
    let batch = to_batch(&records).expect("batch");
    let back = from_parquet("test", to_parquet(&batch).expect("parquet")).expect("read");
    let rows = Rows::new(&back).expect("rows");
    let read: Vec<Dataset> = (0..rows.len()).map(|i| rows.get(i).expect("row")).collect();
    assert_eq!(read, records);
}

#[test]
fn a_catalog_written_before_last_run_existed_reads_it_as_empty() {
    let mut records: Vec<Dataset> = (0..3).map(sample).collect();
    records[1].last_run = Some("incremental: nothing new".into());
    let batch = to_batch(&records).expect("batch");
    let i = batch.schema().index_of("last_run").expect("the column");
    let mut old = batch.clone();
    old.remove_column(i);
    let rows = Rows::new(&old).expect("rows without last_run");
    let read: Vec<Dataset> = (0..rows.len()).map(|i| rows.get(i).expect("row")).collect();
    assert!(read.iter().all(|d| d.last_run.is_none()));
    let rows = Rows::new(&batch).expect("rows");
    assert_eq!(rows.get(1).expect("row"), records[1]);
}

#[tokio::test]
async fn commits_are_read_back_in_order_through_compaction() {
    let cat = memory("order");
    let mut ids = Vec::new();
    for i in 0..(COMPACT_COMMITS as usize + 10) {
        let d = sample(i);
        ids.push(d.id);
        cat.commit(|_| Ok(vec![Change::Create(Box::new(d.clone()))]))
            .await
            .expect("commit");
    }
    // Rename one and remove another after the snapshot.
    cat.commit(|_| {
        Ok(vec![
            Change::Update {
                id: ids[3],
                patch: Box::new(Patch {
                    status: Some(Status::Done),
                    set: BTreeMap::from([("k".into(), "v".into())]),
                    ..Patch::default()
                }),
            },
            Change::Remove { id: ids[4] },
        ])
    })
    .await
    .expect("commit");
    let fresh = Catalog::new(cat.store().clone());
    let state = fresh.read().await.expect("read");
    assert_eq!(state.seq(), COMPACT_COMMITS + 11);
    assert_eq!(state.len(), ids.len() - 1);
    assert_eq!(state.batch().expect("batch").num_rows(), ids.len() - 1);
    let d3 = state.get(ids[3]).expect("get").expect("there");
    assert_eq!(d3.status, Status::Done);
    assert_eq!(d3.attributes.get("k").map(String::as_str), Some("v"));
    assert_eq!(
        d3.attributes.get("source").map(String::as_str),
        Some("src3")
    );
    assert!(state.get(ids[4]).expect("get").is_none());
    assert_eq!(
        state.by_name("ds-7").expect("find").map(|d| d.id),
        Some(ids[7])
    );
    assert_eq!(
        state.by_url("s3://b/ds-9/").expect("find").map(|d| d.id),
        Some(ids[9])
    );
    let snapshots = cat
        .store()
        .list(&format!("{PREFIX}/snapshot/"))
        .await
        .expect("list");
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
}

#[tokio::test]
async fn writers_that_meet_lose_no_update() {
    let cat = memory("race");
    let d = sample(0);
    let id = d.id;
    cat.commit(|_| Ok(vec![Change::Create(Box::new(d.clone()))]))
        .await
        .expect("create");
    let writers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|w| {
            // A catalog of its own per writer: nothing read is shared.
            let cat = Catalog::new(cat.store().clone());
            tokio::spawn(async move {
                for i in 0..40 {
                    cat.commit(|_| {
                        Ok(vec![Change::Update {
                            id,
                            patch: Box::new(Patch {
                                set: BTreeMap::from([(format!("{w}{i}"), i.to_string())]),
                                ..Patch::default()
                            }),
                        }])
                    })
                    .await
                    .expect("update");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let state = Catalog::new(cat.store().clone())
        .read()
        .await
        .expect("read");
    let d = state.get(id).expect("get").expect("there");
    assert_eq!(d.attributes.len(), 1 + 3 * 40, "{:?}", d.attributes);
}

#[tokio::test]
async fn a_refused_change_leaves_the_catalog_as_it_was() {
    let cat = memory("refused");
    cat.commit(|_| Ok(vec![Change::Create(Box::new(sample(1)))]))
        .await
        .expect("create");
    let before = cat.read().await.expect("read").seq();
    let err = cat
        .commit(|_| Err(Error::invalid("no")))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("no"));
    assert_eq!(cat.read().await.expect("read").seq(), before);
}
