//! The JSON Schema of `.ferry.yml`, for editors and other tools. Ferry itself validates
//! with its own loader (which gives better messages); a test keeps the two in step.

use serde_json::{Value, json};

/// The schema as a JSON value (draft 2020-12).
pub fn schema() -> Value {
    let string_or_list = json!({
        "oneOf": [
            { "type": "string" },
            { "type": "array", "items": { "type": "string" } }
        ]
    });
    let scalar = json!({ "type": ["string", "number", "boolean"] });
    let env = json!({
        "type": "object",
        "description": "Environment variables: NAME: value.",
        "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
        "additionalProperties": { "type": ["string", "number", "boolean", "null"] }
    });
    let duration = json!({
        "type": "string",
        "description": "A duration such as 500ms, 90s, 20m or 1h30m.",
        "pattern": "^\\s*([0-9]+\\s*(ms|s|m|h|d)\\s*)+$"
    });
    let kube_object = json!({
        "description": "An object made from the environment's variables or secrets: its name, or { name, keys }.",
        "oneOf": [
            { "type": "string" },
            {
                "type": "object",
                "additionalProperties": false,
                "required": ["name"],
                "properties": { "name": { "type": "string" }, "keys": string_or_list }
            }
        ]
    });
    let filter = json!({
        "type": ["object", "null"],
        "additionalProperties": false,
        "properties": {
            "branches": string_or_list,
            "paths": string_or_list
        }
    });
    let step = json!({
        "oneOf": [
            { "type": "string", "description": "A shell command." },
            {
                "type": "object",
                "additionalProperties": false,
                "required": ["run"],
                "properties": {
                    "name": { "type": "string" },
                    "run": { "type": "string", "description": "Shell commands, run with `sh -e -c`." },
                    "env": env,
                    "working_directory": { "type": "string" },
                    "timeout": duration
                }
            }
        ]
    });
    let combo = json!({ "type": "object", "additionalProperties": scalar });
    let map = json!({ "type": "object", "additionalProperties": scalar });
    let cache = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["key", "paths"],
        "properties": {
            "key": { "type": "string" },
            "paths": string_or_list
        }
    });
    let job = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
                                    "image": {
                "description": "Run the steps in containers of this image.",
                "oneOf": [
                    { "type": "string" },
                    {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["name"],
                        "properties": {
                            "name": { "type": "string" },
                            "user": { "type": ["string", "integer"] },
                            "entrypoint": string_or_list
                        }
                    }
                ]
            },
            "resources": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "cpus": { "type": ["number", "string"] },
                    "memory": { "type": ["string", "integer"] }
                }
            },
            "services": {
                "type": "object",
                "description": "Containers next to the job, on a network of its own, reachable by name.",
                "propertyNames": { "pattern": "^[a-z]([a-z0-9-]*[a-z0-9])?$" },
                "additionalProperties": {
                    "oneOf": [
                        { "type": "string", "description": "The service's image." },
                        {
                            "type": "object",
                            "additionalProperties": false,
                            "required": ["image"],
                            "properties": {
                                "image": { "type": "string" },
                                "env": env,
                                "command": string_or_list,
                                "entrypoint": string_or_list,
                                "ports": {
                                    "oneOf": [
                                        { "type": "integer", "minimum": 1, "maximum": 65535 },
                                        { "type": "array", "items": { "type": "integer", "minimum": 1, "maximum": 65535 } }
                                    ]
                                },
                                "health": { "type": "string", "description": "A shell command run inside the service until it succeeds." },
                                "wait": duration
                            }
                        }
                    ]
                }
            },
            "cache": {
                "description": "Paths restored before the job and saved after it, by key.",
                "oneOf": [ cache, { "type": "array", "items": cache } ]
            },
            "build_image": {
                "type": "object",
                "description": "Build an image from the workspace after the steps; tag it with the commit and push it.",
                "additionalProperties": false,
                "required": ["name"],
                "properties": {
                    "name": { "type": "string" },
                    "context": { "type": "string" },
                    "dockerfile": { "type": "string" },
                    "args": map,
                    "target": { "type": "string" },
                    "labels": map,
                    "tags": string_or_list,
                    "push": { "type": "boolean" }
                }
            },
            "run": { "type": "string", "description": "A single shell command (instead of `steps`)." },
            "steps": { "type": "array", "minItems": 1, "items": step },
            "needs": string_or_list,
            "if": { "type": ["string", "boolean"], "description": "A condition; the job is skipped when false." },
            "matrix": {
                "type": "object",
                "properties": {
                    "include": { "type": "array", "items": combo },
                    "exclude": { "type": "array", "items": combo }
                },
                "additionalProperties": { "type": "array", "minItems": 1, "items": scalar }
            },
            "env": env,
            "working_directory": { "type": "string" },
            "timeout": duration,
            "retry": {
                "oneOf": [
                    { "type": "integer", "minimum": 0, "maximum": 10 },
                    {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "max": { "type": "integer", "minimum": 0, "maximum": 10 },
                            "when": {
                                "oneOf": [
                                    { "enum": ["failure", "timeout"] },
                                    { "type": "array", "items": { "enum": ["failure", "timeout"] } }
                                ]
                            },
                            "exit_codes": { "type": "array", "items": { "type": "integer", "minimum": 0, "maximum": 255 } }
                        }
                    }
                ]
            },
            "allow_failure": { "type": "boolean" },
            "artifacts": string_or_list,
            "reports": {
                "type": "object",
                "additionalProperties": false,
                "properties": { "junit": string_or_list }
            }
        },
        "anyOf": [
            { "required": ["run"], "not": { "required": ["steps"] } },
            { "required": ["steps"], "not": { "required": ["run"] } },
            { "required": ["build_image"], "not": { "anyOf": [ { "required": ["run"] }, { "required": ["steps"] } ] } }
        ]
    });
    let target = json!({
        "type": "object",
        "description": "Where a release goes: exactly one of the kinds.",
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": false,
        "properties": {
            "process": {
                "type": "object",
                "additionalProperties": false,
                "required": ["command"],
                "properties": { "command": { "type": "string" }, "env": env }
            },
            "docker": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "image": { "type": "string", "description": "The job whose image the release holds." },
                    "ports": string_or_list,
                    "env": env,
                    "volumes": string_or_list,
                    "command": string_or_list
                }
            },
            "script": {
                "type": "object",
                "additionalProperties": false,
                "required": ["run"],
                "properties": { "run": { "type": "string" }, "image": { "type": "string" } }
            },
            "kubernetes": {
                "type": "object",
                "additionalProperties": false,
                "required": ["manifests", "kubeconfig"],
                "properties": {
                    "manifests": string_or_list,
                    "kubeconfig": { "type": "string", "description": "The secret holding the kubeconfig." },
                    "namespace": { "type": "string" },
                    "rollout": string_or_list,
                    "timeout": duration,
                    "config_map": kube_object.clone(),
                    "secret": kube_object
                }
            },
            "gitops": {
                "type": "object",
                "additionalProperties": false,
                "required": ["repo", "manifests"],
                "properties": {
                    "repo": { "type": "string", "description": "The environment repository." },
                    "branch": { "type": "string" },
                    "path": { "type": "string" },
                    "manifests": string_or_list,
                    "token": { "type": "string", "description": "The secret holding a token for https." }
                }
            },
            "swarm": {
                "type": "object",
                "additionalProperties": false,
                "required": ["compose"],
                "properties": {
                    "compose": { "type": "string", "description": "The compose file, in the repository." },
                    "stack": { "type": "string" },
                    "timeout": duration
                }
            }
        }
    });
    let http = json!({
        "oneOf": [
            { "type": "string" },
            {
                "type": "object",
                "additionalProperties": false,
                "required": ["url"],
                "properties": {
                    "url": { "type": "string" },
                    "status": { "type": "integer", "minimum": 100, "maximum": 599 },
                    "body": { "type": "string" }
                }
            }
        ]
    });
    let deploy = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["target"],
        "properties": {
            "target": target,
            "verify": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "http": { "oneOf": [ http, { "type": "array", "items": http } ] },
                    "tcp": string_or_list,
                    "command": string_or_list,
                    "for": duration,
                    "interval": duration
                }
            },
            "on_failure": { "enum": ["rollback", "stop"] },
            "watch": {
                "oneOf": [
                    { "type": "boolean" },
                    {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "interval": duration,
                            "failures": { "type": "integer", "minimum": 1, "maximum": 1000 }
                        }
                    }
                ]
            },
            "on_unhealthy": { "enum": ["notify", "rollback"] },
            "config": {
                "type": "object",
                "additionalProperties": false,
                "description": "What is written for each environment at deploy time (process and docker targets)",
                "properties": {
                    "env_file": {
                        "type": "string",
                        "description": "The environment's variables as a dotenv file: a path in the container (docker) or under $FERRY_CONFIG_DIR (process)"
                    },
                    "files": {
                        "type": "object",
                        "description": "Files rendered per environment, by path: inline text or a release file as a template",
                        "additionalProperties": {
                            "oneOf": [
                                { "type": "string" },
                                {
                                    "type": "object",
                                    "additionalProperties": false,
                                    "properties": {
                                        "template": { "type": "string" },
                                        "content": { "type": "string" }
                                    }
                                }
                            ]
                        }
                    },
                    "secrets_dir": {
                        "type": "string",
                        "description": "docker: where each secret is a read-only file (default /run/secrets)"
                    },
                    "volumes": {
                        "type": "object",
                        "description": "docker: named volumes of the environment, kept across releases: name → path in the container",
                        "additionalProperties": { "type": "string" }
                    }
                }
            }
        }
    });
    let freeze = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "from": { "type": "string", "format": "date-time" },
            "to": { "type": "string", "format": "date-time" },
            "cron": { "type": "string" },
            "for": duration
        }
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://ferry.dev/schema/ferry.yml.json",
        "title": "Ferry pipeline (.ferry.yml)",
        "type": "object",
        "additionalProperties": false,
        "patternProperties": { "^x-": { "description": "Anything, e.g. YAML anchors to reuse." } },
        "required": ["jobs"],
        "properties": {
            "on": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "push": filter,
                    "pull_request": filter,
                    "tag": { "oneOf": [ { "type": "null" }, string_or_list ] },
                    "schedule": string_or_list,
                    "manual": { "type": ["object", "null", "boolean"] }
                }
            },
            "env": env,
            "concurrency": {
                "description": "Runs in the same group run one at a time; newer runs supersede older queued ones.",
                "oneOf": [
                    { "type": "string" },
                    {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["group"],
                        "properties": {
                            "group": { "type": "string" },
                            "cancel_in_progress": { "type": "boolean" }
                        }
                    }
                ]
            },
            "release": {
                "type": ["object", "null"],
                "description": "What a successful run on a releasable event seals.",
                "additionalProperties": false,
                "properties": {
                    "branches": string_or_list,
                    "tags": string_or_list,
                    "artifacts": string_or_list,
                    "images": string_or_list
                }
            },
            "environments": {
                "type": "object",
                "propertyNames": { "pattern": "^[a-z][a-z0-9_-]*$" },
                "additionalProperties": {
                    "type": ["object", "null"],
                    "additionalProperties": false,
                    "properties": {
                        "after": { "type": "string" },
                        "auto": { "type": "boolean" },
                        "approval": {
                            "type": "object",
                            "additionalProperties": false,
                            "properties": {
                                "required": { "type": "integer", "minimum": 1 },
                                "from": string_or_list,
                                "not": {
                                    "oneOf": [
                                        { "enum": ["author", "triggerer", "requester"] },
                                        { "type": "array", "items": { "enum": ["author", "triggerer", "requester"] } }
                                    ]
                                },
                                "expires": duration
                            }
                        },
                        "freeze": { "oneOf": [ freeze, { "type": "array", "items": freeze } ] },
                        "deploy": deploy,
                        "infra": {
                            "description": "Terraform code that provisions the environment on each promotion (sealed into the release).",
                            "type": "object",
                            "additionalProperties": false,
                            "required": ["dir"],
                            "properties": {
                                "dir": { "type": "string", "description": "The module's directory, relative to the repository's root." },
                                "vars": { "type": "object", "description": "Terraform variables of this environment (TF_VAR_*).", "additionalProperties": { "type": ["string", "number", "boolean"] } },
                                "destroy": { "enum": ["approval", "allow"], "description": "A plan that destroys anything waits for an approval (the default) or not." }
                            }
                        }
                    }
                }
            },
            "deploy": deploy,
            "notify": {
                "description": "Where Ferry tells what happened (read from the default branch): each entry has one of webhook, slack, email.",
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "webhook": {
                            "oneOf": [
                                { "type": "string", "pattern": "^https?://" },
                                {
                                    "type": "object",
                                    "additionalProperties": false,
                                    "required": ["url"],
                                    "properties": {
                                        "url": { "type": "string", "pattern": "^https?://" },
                                        "secret": { "type": "string", "description": "The repository secret to sign with (HMAC-SHA256)." }
                                    }
                                }
                            ]
                        },
                        "slack": { "type": "string", "description": "The repository secret holding the incoming webhook's URL." },
                        "email": string_or_list,
                        "on": {
                            "type": "array",
                            "items": { "enum": ["run.failed", "run.fixed", "approval.waiting", "deployment.live", "deployment.failed", "deployment.rolled_back", "environment.unhealthy", "environment.recovered"] }
                        },
                        "environments": string_or_list
                    }
                }
            },
            "jobs": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": { "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$" },
                "additionalProperties": job
            }
        }
    })
}
