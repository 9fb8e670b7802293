//! The API's front door: `GET /api` says what this is, and `GET /api/openapi.json` serves the OpenAPI 3.0
//! document of the API.
//!
//! The document is built here in code, next to the handlers, so that the limits it states are the types and
//! constants the handlers enforce. It does not route anything: routes are declared by each resource
//! ([`super::route`]). It is kept true by tests: one in `api` checks it lists exactly the declared routes and
//! methods, and tests/api.rs walks every documented path and method and checks a route answers it (and that
//! undocumented methods are 405). A schema-driven fuzzer can check every response against it.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::page::{DEFAULT_LIMIT, MAX_LIMIT};
use super::route::Route;
use super::tasks::MAX_TASK_BODY;
use super::values::{CommentBody, Description, Label, ProjectName, ProjectStatus, Role, TaskStatus, Title};
use crate::http::input::MAX_BODY;
use crate::http::reply::ok;

pub const ROUTES: &[Route] =
    &[Route { path: "/api", methods: &["GET"] }, Route { path: "/api/openapi.json", methods: &["GET"] }];

/// `GET /api` and `GET /api/openapi.json`, no token needed.
pub fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let index = warp::path!("api")
        .and(warp::get())
        .map(|| ok(StatusCode::OK, &json!({"api": "boardcast", "openapi": "/api/openapi.json"})));
    let document = warp::path!("api" / "openapi.json").and(warp::get()).map(|| ok(StatusCode::OK, document()));
    index.or(document).unify()
}

pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "boardcast",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The REST API of boardcast. Writes return the `seq` of the event they produced on the \
                            WebSocket feed (/ws, see docs/protocol.md). Errors are always \
                            {\"error\": {\"code\", \"message\"}}, with `field` on 422, `current` on 409 and `retry_after` on 429. Unknown \
                            body fields and query parameters are refused with 422. See docs/api.md."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": merge([front_paths(), project_paths(), board_paths()]),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                "description": "an API token: `boardcast user add NAME`, `boardcast token issue NAME`, or POST /api/tokens; \
                                or, where configured, a JWT whose `sub` is a boardcast user's id"}},
            "schemas": merge([records(), requests()]),
            "responses": {
                "400": error_response("Malformed: not JSON, not an object, a bad query string"),
                "401": error_response("No token, or an unknown, expired, revoked or malformed one"),
                "403": error_response("A member, but not allowed to do this (owners only, authors only); or a JWT whose \
                                       `sub` is not a boardcast user"),
                "404": error_response("No such resource, or not one the caller may see"),
                "409": error_response("Conflicts with the current state; `current` holds it when there is one"),
                "408": error_response("The body did not arrive within the body timeout (20 s by default); the \
                                       connection is closed"),
                "413": error_response(&format!(
                    "The body is larger than {MAX_TASK_BODY} bytes (creating or changing a task: a description of \
                     200,000 characters, however escaped) or {MAX_BODY} bytes (every other operation)"
                )),
                "415": error_response("The body is not application/json"),
                "422": error_response("A field, parameter or the body holds a value that is not allowed; `field` names it"),
                "429": rate_limited_response(),
                "503": error_response("The database is not reachable right now; retry"),
            }
        }
    })
}

/// The schemas of what the API answers.
fn records() -> Value {
    let uuid = json!({"type": "string", "format": "uuid"});
    let time = json!({"type": "string", "format": "date-time"});
    let seq = json!({"type": "integer", "nullable": true, "minimum": 0,
        "description": "On write responses: the seq of the event this write produced in the project's feed (null \
                        if it changed nothing). Also in the X-Boardcast-Seq header."});
    let tx = json!({"type": "string", "nullable": true, "pattern": "^[0-9]+$",
        "description": "On write responses: the transaction that made this write, as its events' `tx` say it (a \
                        64-bit id in decimal; null if it changed nothing). Also in the X-Boardcast-Tx header."});

    json!({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": ["bad_request", "unauthorized", "forbidden", "not_found",
                        "method_not_allowed", "conflict", "timeout", "too_large", "unsupported_media_type", "invalid",
                        "rate_limited", "unavailable", "internal"]},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "422: the field, query parameter or `body` at fault"},
                    "current": {"type": "object", "description": "409: the current state of the resource"},
                    "retry_after": {"type": "integer", "description": "429: seconds to wait, as in Retry-After"}
                }
            }}
        },
        "Project": {
            "type": "object", "required": ["id", "name", "status", "created_at", "updated_at", "role"],
            "properties": {
                "id": uuid, "name": {"type": "string"}, "status": {"type": "string", "enum": ProjectStatus::NAMES},
                "created_at": time, "updated_at": time,
                "role": {"type": "string", "enum": Role::NAMES, "description": "the caller's role"},
                "seq": seq, "tx": tx
            }
        },
        "Member": {
            "type": "object", "required": ["project_id", "user_id", "user_name", "role", "created_at"],
            "properties": {
                "project_id": uuid, "user_id": uuid, "user_name": {"type": "string"},
                "role": {"type": "string", "enum": Role::NAMES}, "created_at": time, "seq": seq, "tx": tx
            }
        },
        "Task": {
            "type": "object",
            "required": ["id", "project_id", "title", "description", "status", "assignee_id", "position", "version",
                         "created_at", "updated_at"],
            "properties": {
                "id": uuid, "project_id": uuid, "title": {"type": "string"}, "description": {"type": "string"},
                "status": {"type": "string", "enum": TaskStatus::NAMES},
                "assignee_id": {"type": "string", "format": "uuid", "nullable": true},
                "position": {"type": "number", "minimum": -1e15, "maximum": 1e15},
                "version": {"type": "integer", "minimum": 1},
                "created_at": time, "updated_at": time, "seq": seq, "tx": tx
            }
        },
        "Comment": {
            "type": "object",
            "required": ["id", "task_id", "project_id", "author_id", "body", "version", "created_at", "updated_at"],
            "properties": {
                "id": uuid, "task_id": uuid, "project_id": uuid,
                "author_id": {"type": "string", "format": "uuid", "nullable": true},
                "body": {"type": "string"}, "version": {"type": "integer", "minimum": 1},
                "created_at": time, "updated_at": time, "seq": seq, "tx": tx
            }
        },
        "Deleted": {
            "type": "object", "required": ["deleted", "seq"],
            "properties": {"id": uuid, "project_id": uuid, "task_id": uuid, "user_id": uuid,
                           "deleted": {"type": "boolean"}, "seq": seq, "tx": tx}
        },
        "Me": {
            "type": "object", "required": ["id", "name", "created_at"],
            "properties": {"id": uuid, "name": {"type": "string"}, "created_at": time}
        },
        "Token": {
            "type": "object", "required": ["id", "label", "created_at", "revoked_at"],
            "properties": {
                "id": uuid, "label": {"type": "string"}, "created_at": time,
                "revoked_at": {"type": "string", "format": "date-time", "nullable": true},
                "expires_at": {"type": "string", "format": "date-time", "nullable": true,
                               "description": "when it stops working on its own; null: only when revoked"},
                "current": {"type": "boolean", "description": "in lists: whether this is the token of the request"},
                "token": {"type": "string", "description": "only when issued: the secret, shown this once"}
            }
        },
        "ProjectPage": page("Project"),
        "TaskPage": page("Task"),
        "CommentPage": page("Comment"),
        "MemberPage": page("Member"),
        "TokenPage": page("Token"),
    })
}

/// The schemas of request bodies: their limits are the types the handlers parse them into.
fn requests() -> Value {
    let any_of_required: Vec<Value> = ["title", "description", "status", "assignee_id", "position"]
        .iter()
        .map(|f| json!({"required": [f]}))
        .collect();
    json!({
        "NewProject": object(&[("name", text(ProjectName::MIN, ProjectName::MAX))], &["name"],
                             &[("status", choice(ProjectStatus::NAMES))]),
        "ProjectChange": patch(&[("name", text(ProjectName::MIN, ProjectName::MAX)),
                                 ("status", choice(ProjectStatus::NAMES))]),
        "NewMember": object(
            &[("user", json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$", "description": "a user name"}))],
            &["user"],
            &[("role", choice(Role::NAMES))]),
        "MemberChange": object(&[("role", choice(Role::NAMES))], &["role"], &[]),
        "NewTask": object(&[("title", text(Title::MIN, Title::MAX))], &["title"], &task_fields()),
        "TaskChange": {
            "type": "object", "additionalProperties": false, "minProperties": 1,
            "description": "Send the fields to change, and `version` to refuse the write (409) if the task changed \
                            since. At least one field besides `version`.",
            "properties": props(&[task_fields(), vec![("title", text(Title::MIN, Title::MAX)), ("version", version())]]
                .concat()),
            "anyOf": any_of_required
        },
        "NewComment": object(&[("body", text(CommentBody::MIN, CommentBody::MAX))], &["body"], &[]),
        "CommentChange": object(&[("body", text(CommentBody::MIN, CommentBody::MAX))], &["body"],
                                &[("version", version())]),
        "NewToken": object(&[], &[], &[
            ("label", text(Label::MIN, Label::MAX)),
            ("expires_in", json!({"type": "integer", "minimum": 1,
                "description": "the token's lifetime in seconds: 90 days when left out, at most 365 days (the \
                                server's defaults)"})),
        ]),
    })
}

/// The front door, the caller and their tokens.
fn front_paths() -> Value {
    let (limit, cursor) = (limit(), cursor());
    let token_id = id_param("token_id", "a token id");
    json!({
        "/api": {"get": {
            "operationId": "index", "summary": "What this is", "security": [],
            "responses": {"200": {"description": "the API's name", "content": json_schema(json!({"type": "object"}))}}
        }},
        "/api/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document", "security": [],
            "responses": {"200": {"description": "the OpenAPI document", "content": json_schema(json!({"type": "object"}))}}
        }},
        "/client.js": {"get": {
            "operationId": "client", "summary": "The JavaScript feed client (an ES module; clients/js/README.md)",
            "security": [],
            "responses": {"200": {"description": "the module", "content": {"text/javascript": {"schema": {"type": "string"}}}}}
        }},
        "/client.d.ts": {"get": {
            "operationId": "clientTypes", "summary": "The TypeScript types of /client.js", "security": [],
            "responses": {"200": {"description": "the declarations",
                                   "content": {"application/typescript": {"schema": {"type": "string"}}}}}
        }},
        "/api/me": {"get": op("me", "Who the token belongs to", vec![], None, "200", "Me", &[])},
        "/api/tokens": {
            "get": op("listTokens", "The caller's API tokens, oldest first", vec![limit.clone(), cursor.clone()],
                      None, "200", "TokenPage", &[]),
            "post": op("issueToken", "Issue another token for the caller (the secret is shown once)", vec![],
                       Some("NewToken"), "201", "Token", &["409"]),
        },
        "/api/tokens/{token_id}": {
            "delete": op("revokeToken", "Revoke one of the caller's tokens; it stops working at once",
                         vec![token_id], None, "200", "Token", &["404"]),
        },
    })
}

/// Projects and their members.
fn project_paths() -> Value {
    let (limit, cursor) = (limit(), cursor());
    let project_id = id_param("project_id", "a project id");
    let user_id = id_param("user_id", "a member's user id");
    json!({
        "/api/projects": {
            "get": op("listProjects", "The caller's projects, oldest first", vec![limit.clone(), cursor.clone()],
                      None, "200", "ProjectPage", &[]),
            "post": op("createProject", "Create a project; the caller becomes its owner", vec![],
                       Some("NewProject"), "201", "Project", &[]),
        },
        "/api/projects/{project_id}": {
            "get": op("getProject", "A project", vec![project_id.clone()], None, "200", "Project", &["404"]),
            "patch": op("updateProject", "Rename or archive a project (owners)", vec![project_id.clone()],
                        Some("ProjectChange"), "200", "Project", &["403", "404"]),
            "delete": op("deleteProject", "Delete a project with everything in it (owners)", vec![project_id.clone()],
                         None, "200", "Deleted", &["403", "404"]),
        },
        "/api/projects/{project_id}/members": {
            "get": op("listMembers", "The project's members, in the order they joined",
                      vec![project_id.clone(), limit.clone(), cursor.clone()], None, "200", "MemberPage", &["404"]),
            "post": op("addMember", "Add a user by name (owners); 404 if there is no such user, 409 if already a member", vec![project_id.clone()],
                       Some("NewMember"), "201", "Member", &["403", "404", "409"]),
        },
        "/api/projects/{project_id}/members/{user_id}": {
            "patch": op("updateMember", "Change a member's role (owners); 409 for the last owner",
                        vec![project_id.clone(), user_id.clone()], Some("MemberChange"), "200", "Member",
                        &["403", "404", "409"]),
            "delete": op("removeMember",
                         "Remove a member (owners), or leave (yourself); 409 for the last owner. Takes effect on the \
                          feed at once.",
                         vec![project_id.clone(), user_id], None, "200", "Deleted", &["403", "404", "409"]),
        },
    })
}

/// The board: tasks and their comments.
fn board_paths() -> Value {
    let (limit, cursor) = (limit(), cursor());
    let project_id = id_param("project_id", "a project id");
    let task_id = id_param("task_id", "a task id");
    let comment_id = id_param("comment_id", "a comment id");
    json!({
        "/api/projects/{project_id}/tasks": {
            "get": op("listTasks", "The project's tasks in board order (position, created_at, id)",
                      vec![project_id.clone(),
                           json!({"name": "status", "in": "query", "required": false,
                                  "schema": {"type": "string", "enum": TaskStatus::NAMES}}),
                           json!({"name": "assignee", "in": "query", "required": false,
                                  "schema": {"anyOf": [{"type": "string", "format": "uuid"},
                                                       {"type": "string", "enum": ["none"]}]},
                                  "description": "a user id, or `none` for unassigned tasks"}),
                           limit.clone(), cursor.clone()],
                      None, "200", "TaskPage", &["404"]),
            "post": op("createTask", "Create a task; without position it goes last. 409 if assignee_id is not a member or the project is archived", vec![project_id],
                       Some("NewTask"), "201", "Task", &["404", "409"]),
        },
        "/api/tasks/{task_id}": {
            "get": op("getTask", "A task", vec![task_id.clone()], None, "200", "Task", &["404"]),
            "patch": op("updateTask", "Change a task or move its card; 409 with the current task if `version` is stale, 409 if the project is archived",
                        vec![task_id.clone()], Some("TaskChange"), "200", "Task", &["404", "409"]),
            "delete": op("deleteTask", "Delete a task (and its comments); 409 if `version` is given and stale, or if the project is archived",
                         vec![task_id.clone(), json!({"name": "version", "in": "query", "required": false,
                                                      "schema": {"type": "integer", "minimum": 1, "maximum": i64::MAX}})],
                         None, "200", "Deleted", &["404", "409"]),
        },
        "/api/tasks/{task_id}/comments": {
            "get": op("listComments", "A task's comments, oldest first", vec![task_id.clone(), limit, cursor], None,
                      "200", "CommentPage", &["404"]),
            "post": op("addComment", "Comment on a task; 409 if the project is archived", vec![task_id],
                       Some("NewComment"), "201", "Comment", &["404", "409"]),
        },
        "/api/comments/{comment_id}": {
            "get": op("getComment", "A comment", vec![comment_id.clone()], None, "200", "Comment", &["404"]),
            "patch": op("editComment", "Edit your comment; 409 with the current comment if `version` is stale, 409 if the project is archived",
                        vec![comment_id.clone()], Some("CommentChange"), "200", "Comment", &["403", "404", "409"]),
            "delete": op("deleteComment", "Delete your comment; 409 if the project is archived", vec![comment_id],
                         None, "200", "Deleted", &["403", "404", "409"]),
        },
    })
}

/// One JSON object of the fields of several.
fn merge<const N: usize>(parts: [Value; N]) -> Value {
    let mut all = Map::new();
    for part in parts {
        if let Value::Object(m) = part {
            all.extend(m);
        }
    }
    Value::Object(all)
}

fn id_param(name: &str, what: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"},
           "description": what})
}

fn limit() -> Value {
    json!({"name": "limit", "in": "query", "required": false,
           "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}})
}

fn cursor() -> Value {
    json!({"name": "cursor", "in": "query", "required": false, "schema": {"type": "string"},
           "description": "`next_cursor` of the previous page; a string that is not one is a 404"})
}

/// An authenticated operation: its success response plus the errors every operation of its kind can give.
fn op(
    id: &str,
    summary: &str,
    params: Vec<Value>,
    body: Option<&str>,
    status: &str,
    schema: &str,
    extra: &[&str],
) -> Value {
    let mut responses = Map::new();
    let mut success =
        json!({"description": "OK", "content": json_schema(json!({"$ref": format!("#/components/schemas/{schema}")}))});
    if body.is_some() || status == "201" || matches!(schema, "Deleted") {
        success["headers"] = json!({
            "X-Boardcast-Seq": {"description": "the seq of the write's event, when there is one",
                                "schema": {"type": "integer"}},
            "X-Boardcast-Tx": {"description": "the transaction of the write's events (their `tx`), when there are some",
                               "schema": {"type": "string"}}
        });
    }
    responses.insert(status.into(), success);
    // 404 everywhere: also an unknown cursor, an unknown user name.
    // 403 everywhere too: a JWT whose subject is no boardcast user.
    let mut errors = vec!["400", "401", "403", "404", "422", "429", "503"];
    if body.is_some() {
        errors.extend(["408", "413", "415"]);
    }
    errors.extend(extra);
    for e in errors {
        responses.insert(e.into(), json!({"$ref": format!("#/components/responses/{e}")}));
    }
    let mut op = json!({"operationId": id, "summary": summary, "responses": responses});
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(b) = body {
        // Only a new token's body may be left out: every field of it is optional.
        op["requestBody"] = json!({"required": b != "NewToken",
            "content": json_schema(json!({"$ref": format!("#/components/schemas/{b}")}))});
    }
    op
}

fn json_schema(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": json_schema(json!({"$ref": "#/components/schemas/Error"}))})
}

fn rate_limited_response() -> Value {
    let mut r = error_response(
        "Too many failed authentications from the client's address; wait `Retry-After` seconds (also \
         `retry_after` in the body)",
    );
    r["headers"] = json!({"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}});
    r
}

fn page(item: &str) -> Value {
    json!({"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
        "next_cursor": {"type": "string", "nullable": true, "description": "null on the last page"}
    }})
}

/// Text the API stores: a length in characters, and no NUL (which PostgreSQL text cannot hold).
fn text(min: usize, max: usize) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": max, "pattern": "^[^\\u0000]*$"})
}

fn choice(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

fn version() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": i64::MAX, "description": "the version this change is based on"})
}

fn task_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("description", text(Description::MIN, Description::MAX)),
        ("status", choice(TaskStatus::NAMES)),
        (
            "assignee_id",
            json!({"type": "string", "format": "uuid", "nullable": true,
                               "description": "a member of the project, or null"}),
        ),
        (
            "position",
            json!({"type": "number", "minimum": -1e15, "maximum": 1e15,
            "description": "the card's place on the board; lower comes first"}),
        ),
    ]
}

fn props(fields: &[(&str, Value)]) -> Value {
    Value::Object(fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

/// A request body: a closed object (unknown fields are a 422) with these required and optional fields.
fn object(required: &[(&str, Value)], names: &[&str], optional: &[(&str, Value)]) -> Value {
    let all: Vec<(&str, Value)> = required.iter().chain(optional).cloned().collect();
    let mut o = json!({"type": "object", "additionalProperties": false, "properties": props(&all)});
    if !names.is_empty() {
        o["required"] = json!(names);
    }
    o
}

fn patch(fields: &[(&str, Value)]) -> Value {
    json!({"type": "object", "additionalProperties": false, "minProperties": 1, "properties": props(fields)})
}
