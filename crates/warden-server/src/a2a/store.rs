//! The A2A tables of the task database (`migrations_tasks/0004_a2a.sql`): which tasks came in
//! through A2A with their context, and the messages clients sent on them. Same SQL on SQLite
//! and PostgreSQL, through the task store's pool.

use sqlx::AssertSqlSafe;

use crate::tasks::store::TaskStoreError;
use crate::tasks::store_sql::{SqlTaskStore, with_pool};

/// The A2A side of tasks, in the task database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct A2aStore {
    db: SqlTaskStore,
}

/// Filters of `ListTasks`, in warden's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub context_id: Option<String>,
    /// Only tasks in these warden statuses (`None`: any; empty: none).
    pub statuses: Option<Vec<&'static str>>,
    /// Only tasks whose status changed after this time (ms since the epoch).
    pub updated_after: Option<i64>,
}

/// Where a page starts: after this (created_ms, task id), newest first.
pub type Cursor = (i64, String);

enum Arg {
    Text(String),
    Int(i64),
}

fn sql_error(e: sqlx::Error) -> TaskStoreError {
    TaskStoreError::Sql(e.to_string())
}

impl A2aStore {
    pub fn new(db: SqlTaskStore) -> A2aStore {
        A2aStore { db }
    }

    /// Records that `task_id` is an A2A task of `context_id` (kept if already recorded).
    pub async fn link(
        &self,
        task_id: &str,
        context_id: &str,
        created_ms: i64,
    ) -> Result<(), TaskStoreError> {
        const SQL: &str = "INSERT INTO a2a_tasks (task_id, context_id, created_ms) \
                           VALUES ($1, $2, $3) ON CONFLICT (task_id) DO NOTHING";
        with_pool!(self.db, pool => {
            sqlx::query(SQL)
                .bind(task_id)
                .bind(context_id)
                .bind(created_ms)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(sql_error)?;
        Ok(())
    }

    /// The context of an A2A task; `None` when the task did not come through A2A.
    pub async fn context_of(&self, task_id: &str) -> Result<Option<String>, TaskStoreError> {
        const SQL: &str = "SELECT context_id FROM a2a_tasks WHERE task_id = $1";
        let row: Option<(String,)> = with_pool!(self.db, pool => {
            sqlx::query_as(SQL).bind(task_id).fetch_optional(pool).await
        })
        .map_err(sql_error)?;
        Ok(row.map(|r| r.0))
    }

    /// Keeps a message a client sent on a task (once per message id).
    pub async fn add_message(
        &self,
        task_id: &str,
        message_id: &str,
        created_ms: i64,
        body: &str,
    ) -> Result<(), TaskStoreError> {
        const SQL: &str = "INSERT INTO a2a_messages (task_id, message_id, created_ms, body) \
                           VALUES ($1, $2, $3, $4) ON CONFLICT (task_id, message_id) DO NOTHING";
        with_pool!(self.db, pool => {
            sqlx::query(SQL)
                .bind(task_id)
                .bind(message_id)
                .bind(created_ms)
                .bind(body)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(sql_error)?;
        Ok(())
    }

    /// The messages kept for a task, oldest first (JSON bodies).
    pub async fn messages(&self, task_id: &str) -> Result<Vec<String>, TaskStoreError> {
        const SQL: &str = "SELECT body FROM a2a_messages WHERE task_id = $1 \
                           ORDER BY created_ms, message_id";
        let rows: Vec<(String,)> = with_pool!(self.db, pool => {
            sqlx::query_as(SQL).bind(task_id).fetch_all(pool).await
        })
        .map_err(sql_error)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// One page of A2A task ids, newest first, with the next page's cursor and the number
    /// of tasks matching `filter` in all pages.
    pub async fn page(
        &self,
        filter: &ListFilter,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<(Vec<(String, i64)>, Option<Cursor>, i64), TaskStoreError> {
        let (count_sql, count_args) = statement(filter, None, None);
        let (sql, args) = statement(filter, after, Some(limit));
        let total: (i64,) = with_pool!(self.db, pool => {
            let mut q = sqlx::query_as(AssertSqlSafe(count_sql));
            for arg in count_args {
                q = match arg {
                    Arg::Text(s) => q.bind(s),
                    Arg::Int(i) => q.bind(i),
                };
            }
            q.fetch_one(pool).await
        })
        .map_err(sql_error)?;
        let mut rows: Vec<(String, i64)> = with_pool!(self.db, pool => {
            let mut q = sqlx::query_as(AssertSqlSafe(sql));
            for arg in args {
                q = match arg {
                    Arg::Text(s) => q.bind(s),
                    Arg::Int(i) => q.bind(i),
                };
            }
            q.fetch_all(pool).await
        })
        .map_err(sql_error)?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|(id, ms)| (*ms, id.clone()))
        } else {
            None
        };
        Ok((rows, next, total.0))
    }
}

/// The SELECT of a page (`limit` given: ids and creation times, one row more than the page)
/// or of the count (`limit` `None`), its placeholders numbered in order.
fn statement(
    filter: &ListFilter,
    after: Option<&Cursor>,
    limit: Option<u32>,
) -> (String, Vec<Arg>) {
    let mut args = Vec::new();
    let mut p = |arg: Arg| {
        args.push(arg);
        format!("${}", args.len())
    };
    let mut conditions = Vec::new();
    if let Some(c) = &filter.context_id {
        conditions.push(format!("a.context_id = {}", p(Arg::Text(c.clone()))));
    }
    if let Some(statuses) = &filter.statuses {
        if statuses.is_empty() {
            conditions.push("1 = 0".to_string());
        } else {
            let list: Vec<String> = statuses
                .iter()
                .map(|s| p(Arg::Text((*s).to_string())))
                .collect();
            conditions.push(format!("t.status IN ({})", list.join(", ")));
        }
    }
    if let Some(ms) = filter.updated_after {
        conditions.push(format!("t.updated_ms > {}", p(Arg::Int(ms))));
    }
    if let Some((ms, id)) = after {
        let ms1 = p(Arg::Int(*ms));
        let ms2 = p(Arg::Int(*ms));
        let id = p(Arg::Text(id.clone()));
        conditions.push(format!(
            "(a.created_ms < {ms1} OR (a.created_ms = {ms2} AND a.task_id < {id}))"
        ));
    }
    let mut sql = match limit {
        Some(_) => "SELECT a.task_id, a.created_ms".to_string(),
        None => "SELECT COUNT(*)".to_string(),
    };
    sql.push_str(" FROM a2a_tasks a JOIN tasks t ON t.id = a.task_id");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    if let Some(limit) = limit {
        let l = p(Arg::Int(i64::from(limit) + 1));
        sql.push_str(&format!(
            " ORDER BY a.created_ms DESC, a.task_id DESC LIMIT {l}"
        ));
    }
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_number_their_placeholders() {
        let filter = ListFilter {
            context_id: Some("ctx".into()),
            statuses: Some(vec!["FAILED", "TIMED_OUT"]),
            updated_after: Some(5),
        };
        let (sql, args) = statement(&filter, Some(&(7, "task-a".into())), Some(10));
        assert_eq!(
            sql,
            "SELECT a.task_id, a.created_ms FROM a2a_tasks a JOIN tasks t ON t.id = a.task_id \
             WHERE a.context_id = $1 AND t.status IN ($2, $3) AND t.updated_ms > $4 AND \
             (a.created_ms < $5 OR (a.created_ms = $6 AND a.task_id < $7)) \
             ORDER BY a.created_ms DESC, a.task_id DESC LIMIT $8"
        );
        assert_eq!(args.len(), 8);
        let (count, args) = statement(&ListFilter::default(), None, None);
        assert_eq!(
            count,
            "SELECT COUNT(*) FROM a2a_tasks a JOIN tasks t ON t.id = a.task_id"
        );
        assert!(args.is_empty());
        let none = ListFilter {
            statuses: Some(Vec::new()),
            ..ListFilter::default()
        };
        assert!(statement(&none, None, None).0.ends_with("WHERE 1 = 0"));
    }
}
