//! The machine's limits under the load bench's own generator (see `load.rs`): an empty actix
//! handler, one sending a fixed body the size of one session's answer, an fsync on the data
//! directory's disk, and how fast files can be made there.

use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Options, Request, human_bytes, load};

/// The length of the answer to GET one session with 100 messages in the table.
const SESSION_ANSWER_BYTES: usize = 30_200;

/// A body of [`SESSION_ANSWER_BYTES`], made once: sending it is all the handler does.
static FIXED_BODY: std::sync::LazyLock<actix_web::web::Bytes> =
    std::sync::LazyLock::new(|| actix_web::web::Bytes::from(vec![b'x'; SESSION_ANSWER_BYTES]));

/// Answers [`FIXED_BODY`] as the server answers JSON: the limit of a route that only sends
/// a kept buffer of that size.
async fn fixed_body() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(FIXED_BODY.clone())
}

/// The machine's limits under the same load: an empty actix handler, a handler sending a
/// fixed body the size of one session's answer, and fsyncs on the disk
/// holding the data directory.
pub(super) async fn limits(client: &Rc<awc::Client>, options: &Options, data: &Path) {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new()
            .route("/", actix_web::web::get().to(|| async { "ok" }))
            .route("/body", actix_web::web::get().to(fixed_body))
    })
    .workers(workers)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let outcome =
        load(client, &format!("http://127.0.0.1:{port}"), &Request::get("/"), options).await;
    println!(
        "| empty actix handler, {} connections | {:.0} req/s, CPU {:.3} ms per answer, p50 {:.2} ms, p99 {:.2} ms |",
        options.connections,
        outcome.per_second,
        outcome.cpu_ms,
        outcome.p50.as_secs_f64() * 1e3,
        outcome.p99.as_secs_f64() * 1e3
    );
    // What sending an answer the size of one session with 100 messages costs by itself.
    let outcome =
        load(client, &format!("http://127.0.0.1:{port}"), &Request::get("/body"), options).await;
    println!(
        "| actix handler answering a fixed {} body, {} connections | {:.0} req/s, CPU {:.3} ms per answer, p50 {:.2} ms, p99 {:.2} ms |",
        human_bytes(outcome.bytes),
        options.connections,
        outcome.per_second,
        outcome.cpu_ms,
        outcome.p50.as_secs_f64() * 1e3,
        outcome.p99.as_secs_f64() * 1e3
    );
    handle.stop(false).await;

    // An append and fdatasync of one line, as a journal write pays it.
    let path = data.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let samples = 200;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        file.write_all(&[b'x'; 200]).unwrap();
        file.sync_data().unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "| append 200 bytes + fdatasync, one writer ({samples} samples) | p50 {:.2} ms, p99 {:.2} ms |",
        times[samples / 2].as_secs_f64() * 1e3,
        times[samples * 99 / 100].as_secs_f64() * 1e3
    );
    // The atomic replace every JSON record write pays: temp file, fsync, rename, fsync dir.
    let mut times = Vec::with_capacity(samples);
    for index in 0..samples {
        let started = Instant::now();
        let temp = data.join(format!(".probe.{index}.tmp"));
        let mut file = std::fs::File::create(&temp).unwrap();
        file.write_all(&[b'x'; 400]).unwrap();
        file.sync_all().unwrap();
        std::fs::rename(&temp, data.join("probe.json")).unwrap();
        std::fs::File::open(data).unwrap().sync_all().unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "| write temp + fsync + rename + fsync directory ({samples} samples) | p50 {:.2} ms, p99 {:.2} ms |",
        times[samples / 2].as_secs_f64() * 1e3,
        times[samples * 99 / 100].as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_file(path);
    new_files(options, data);
}

/// What creating a file costs here, with no fsync at all: `connections` threads each writing
/// new 300-byte files under fresh names (temp file, then rename) into one directory, as a
/// store that keeps one file per record (Orbit's inbox and tasks, the plan's every record)
/// must. On ext4 without a journal the inode allocator skips every inode freed in the last
/// seconds (`recently_deleted`), so this ceiling falls with whatever else deletes files on
/// the same disk.
fn new_files(options: &Options, data: &Path) {
    let dir = data.join("new-file-probe");
    std::fs::create_dir_all(&dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs_f64(options.seconds.min(3.0));
    let started = Instant::now();
    let writers: Vec<_> = (0..options.connections)
        .map(|writer| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut made = 0usize;
                while Instant::now() < deadline {
                    let temp = dir.join(format!(".{writer}.{made}.tmp"));
                    std::fs::write(&temp, [b'x'; 300]).unwrap();
                    std::fs::rename(&temp, dir.join(format!("{writer}.{made}.json"))).unwrap();
                    made += 1;
                }
                made
            })
        })
        .collect();
    let made: usize = writers.into_iter().map(|writer| writer.join().unwrap()).sum();
    println!(
        "| new 300-byte file + rename, no fsync, {} threads | {:.0} files/s |",
        options.connections,
        made as f64 / started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(dir);
}
