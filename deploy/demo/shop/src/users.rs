//! `users`: registers users and looks them up (HTTP/1.1 + JSON). A leaf service: it
//! calls nobody.
//!
//! ```text
//! POST /users {"name"}  -> 201 {"id","name"}
//! GET  /users/{id}      -> 200 {"id","name"} | 404
//! GET  /health          -> 200
//! ```

use std::collections::HashMap;
use std::sync::Mutex;

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::http::{self, Handler, Reply, ShopRequest};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub id: u64,
    pub name: String,
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
}

#[derive(Default)]
pub struct Users {
    // A std Mutex, not a tokio one: nothing awaits while it is held.
    state: Mutex<Directory>,
}

#[derive(Default)]
struct Directory {
    by_id: HashMap<u64, User>,
    last_id: u64,
}

impl Users {
    fn register(&self, name: String) -> User {
        let mut directory = self.state.lock().unwrap_or_else(|e| e.into_inner());
        directory.last_id += 1;
        let user = User {
            id: directory.last_id,
            name,
        };
        directory.by_id.insert(user.id, user.clone());
        user
    }

    fn find(&self, id: &str) -> Option<User> {
        let id: u64 = id.parse().ok()?;
        let directory = self.state.lock().unwrap_or_else(|e| e.into_inner());
        directory.by_id.get(&id).cloned()
    }
}

impl Handler for Users {
    async fn handle(&self, request: ShopRequest) -> Reply {
        let (method, path) = request.route();
        match (method, path.as_slice()) {
            (&Method::GET, ["health"]) => http::empty(StatusCode::OK),
            (&Method::POST, ["users"]) => {
                let new: NewUser = match request.json() {
                    Ok(new) => new,
                    Err(reply) => return *reply,
                };
                if new.name.trim().is_empty() {
                    return http::error(StatusCode::BAD_REQUEST, "name must not be empty");
                }
                http::json(StatusCode::CREATED, &self.register(new.name))
            }
            (&Method::GET, ["users", id]) => match self.find(id) {
                Some(user) => http::json(StatusCode::OK, &user),
                None => http::error(StatusCode::NOT_FOUND, "no such user"),
            },
            _ => http::error(StatusCode::NOT_FOUND, "no such route"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_users_are_found_by_id() {
        let users = Users::default();
        let ada = users.register("ada".into());
        let bob = users.register("bob".into());
        assert_ne!(ada.id, bob.id);
        assert_eq!(users.find(&ada.id.to_string()), Some(ada));
        assert_eq!(users.find("999"), None);
        assert_eq!(users.find("not-a-number"), None);
    }
}
