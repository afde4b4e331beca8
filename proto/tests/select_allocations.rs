//! Choosing a request's route allocates nothing: not when its service has no
//! routes (the common case), and not when it walks ten routes to the last one, with
//! header, query and regular-expression conditions on the way. Counted by an
//! allocator that wraps the system's and counts per thread, in a test binary of
//! its own.

#![allow(unsafe_code)] // the counting allocator

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};
use weft_proto::document;
use weft_proto::model::route::{HttpRequest, RouteTable, ServiceRoutes};
use weft_proto::model::{HttpRoute, Service};
use weft_proto::resource::{decode_resource, Body};

struct Counting;

thread_local! {
    // Const-initialised and without a destructor, so using it cannot allocate.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; counting touches
// only a thread-local Cell.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: the caller's contract for `alloc` is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_during(work: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    work();
    ALLOCATIONS.with(Cell::get) - before
}

fn bodies(text: &str) -> Vec<Body> {
    document::parse(text)
        .expect("parse")
        .iter()
        .map(|d| decode_resource(&d.to_resource()).expect("valid"))
        .collect()
}

#[test]
fn selection_allocates_nothing() {
    let mut text = "kind: Service
metadata: {name: orders, namespace: shop}
spec:
  ports: [{port: 80, protocol: http1}]
"
    .to_owned();
    // Nine routes that do not match the request, then the one that does.
    for i in 0..9 {
        text.push_str(&format!(
            "---
kind: HTTPRoute
metadata: {{name: miss-{i}, namespace: shop}}
spec:
  parentRefs: [{{name: orders}}]
  rules:
  - matches:
    - path: {{type: RegularExpression, value: '/other/{i}/[a-z]+'}}
    - path: {{value: /api}}
      headers: [{{name: x-version, value: v{i}}}]
      queryParams: [{{name: tenant, value: t{i}}}]
"
        ));
    }
    text.push_str(
        "---
kind: HTTPRoute
metadata: {name: hit, namespace: shop}
spec:
  parentRefs: [{name: orders}]
  rules:
  - matches:
    - path: {value: /api}
      headers: [{name: x-version, type: RegularExpression, value: 'v[0-9]+-canary'}]
    backendRefs: [{name: orders, weight: 9}, {name: orders, port: 80, weight: 1}]
",
    );
    let mut service: Option<Service> = None;
    let mut routes: Vec<Arc<HttpRoute>> = Vec::new();
    for body in bodies(&text) {
        match body {
            Body::Service(s) => service = Some(s),
            Body::HttpRoute(r) => routes.push(Arc::new(r)),
            other => panic!("{other:?}"),
        }
    }
    let service = service.expect("the service");
    let compiled = ServiceRoutes::compile(&service, &routes, &[]);
    let none = ServiceRoutes::default();

    let mut headers = HeaderMap::new();
    headers.insert("x-version", HeaderValue::from_static("v7-canary"));
    let method = Method::GET;
    let request = HttpRequest {
        method: &method,
        path: "/api/orders",
        query: Some("tenant=t3&page=2"),
        authority: Some("orders.shop:80"),
        headers: &headers,
    };
    let select = || {
        let Some(RouteTable::Http(table)) = compiled.for_caller(80, "web") else {
            panic!("no table");
        };
        let selection = table.select(&request).expect("a rule");
        assert_eq!(selection.rule.route.name.name, "hit");
        selection
            .rule
            .backends
            .pick(0x8000_0000)
            .expect("a backend");
    };
    // The regex crate keeps a per-thread cache it fills on first use.
    select();

    let count = allocations_during(|| {
        for _ in 0..1000 {
            assert!(none.for_caller(80, "web").is_none());
            select();
        }
    });
    assert_eq!(count, 0, "allocations in 1000 selections");
}
