//! The example application: greets whoever asks, on the command line
//! (`hello NAME`, `hello --version`) or over HTTP (`hello serve`: `PORT`, `GREETING`
//! and Ferry's `FERRY_ENVIRONMENT` come from the environment it is deployed to).
//! Only the standard library: `rustc -O app.rs` builds it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

const VERSION: &str = match option_env!("APP_VERSION") {
    Some(v) => v,
    None => "dev",
};

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") => println!("hello {VERSION}"),
        Some("serve") => serve(),
        other => println!("{}, world", other.unwrap_or("hello")),
    }
}

fn serve() {
    let port: u16 = match std::env::var("PORT").ok().and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => {
            eprintln!("hello: set PORT to the port to listen on");
            std::process::exit(2);
        }
    };
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello".into());
    let place = std::env::var("FERRY_ENVIRONMENT").unwrap_or_else(|_| "here".into());
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("hello {VERSION}: listening on http://127.0.0.1:{port}/ in {place}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut reader = BufReader::new(&stream);
        let mut request = String::new();
        if reader.read_line(&mut request).is_err() {
            continue;
        }
        // The headers: read and ignored.
        let mut header = String::new();
        while matches!(reader.read_line(&mut header), Ok(n) if n > 2) {
            header.clear();
        }
        let path = request.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = match path {
            "/healthz" => ("200 OK", format!("ok {VERSION}\n")),
            "/" => ("200 OK", format!("{greeting}, world, from {place} (version {VERSION})\n")),
            _ => ("404 Not Found", "not found\n".to_string()),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
