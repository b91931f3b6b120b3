//! Resource pools and DRS rules in SQLite. A pool is a row with both resources' columns
//! (memory's are the first schema's `shares`, `reservation_mib`, `limit_mib`); a rule is
//! its name, cluster and JSON definition (a rule names VMs that may come and go with the
//! hosts' reports, so its members are not foreign keys that would vanish with them).

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{collect, from_json, to_json, U64};
use crate::model::{PoolAllocation, ResourcePool, Rule, RuleDefinition};
use crate::store::{Result, StoreError};

const POOL_COLUMNS: &str = "name, cluster, parent, \
    cpu_reservation_mhz, cpu_limit_mhz, cpu_shares, cpu_expandable, \
    reservation_mib, limit_mib, shares, memory_expandable";

/// One resource's four columns, read raw.
type RawAlloc = (U64, Option<U64>, i64, bool);

type RawPool = (String, String, Option<String>, RawAlloc, RawAlloc);

fn raw_pool(r: &Row<'_>) -> rusqlite::Result<RawPool> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        (r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?),
        (r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?),
    ))
}

fn alloc_of(column: &'static str, raw: RawAlloc) -> Result<PoolAllocation> {
    let shares = u32::try_from(raw.2).map_err(|_| StoreError::Value {
        column,
        value: raw.2.to_string(),
    })?;
    Ok(PoolAllocation {
        reservation: raw.0 .0,
        limit: raw.1.map(|l| l.0),
        shares,
        expandable_reservation: raw.3,
    })
}

fn pool_of(raw: RawPool) -> Result<ResourcePool> {
    Ok(ResourcePool {
        name: raw.0,
        cluster: raw.1,
        parent: raw.2,
        cpu_allocation: alloc_of("resource_pool.cpu_shares", raw.3)?,
        memory_allocation: alloc_of("resource_pool.shares", raw.4)?,
    })
}

pub(super) fn resource_pools(conn: &Connection) -> Result<Vec<ResourcePool>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {POOL_COLUMNS} FROM resource_pool ORDER BY name"
    ))?;
    let rows = stmt.query_map([], raw_pool)?;
    collect(rows, pool_of)
}

pub(super) fn resource_pool(conn: &Connection, name: &str) -> Result<Option<ResourcePool>> {
    let raw = conn
        .query_row(
            &format!("SELECT {POOL_COLUMNS} FROM resource_pool WHERE name = ?1"),
            [name],
            raw_pool,
        )
        .optional()?;
    raw.map(pool_of).transpose()
}

pub(super) fn add_resource_pool(conn: &Connection, p: &ResourcePool) -> Result<()> {
    let (c, m) = (&p.cpu_allocation, &p.memory_allocation);
    let n = conn.execute(
        &format!(
            "INSERT INTO resource_pool ({POOL_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING"
        ),
        params![
            p.name,
            p.cluster,
            p.parent,
            U64(c.reservation),
            c.limit.map(U64),
            c.shares,
            c.expandable_reservation,
            U64(m.reservation),
            m.limit.map(U64),
            m.shares,
            m.expandable_reservation
        ],
    )?;
    if n == 0 {
        return Err(StoreError::Exists(format!("resource pool {}", p.name)));
    }
    Ok(())
}

pub(super) fn update_resource_pool(conn: &Connection, p: &ResourcePool) -> Result<bool> {
    let (c, m) = (&p.cpu_allocation, &p.memory_allocation);
    let n = conn.execute(
        "UPDATE resource_pool SET parent = ?2,
            cpu_reservation_mhz = ?3, cpu_limit_mhz = ?4, cpu_shares = ?5, cpu_expandable = ?6,
            reservation_mib = ?7, limit_mib = ?8, shares = ?9, memory_expandable = ?10
         WHERE name = ?1",
        params![
            p.name,
            p.parent,
            U64(c.reservation),
            c.limit.map(U64),
            c.shares,
            c.expandable_reservation,
            U64(m.reservation),
            m.limit.map(U64),
            m.shares,
            m.expandable_reservation
        ],
    )?;
    Ok(n == 1)
}

pub(super) fn delete_resource_pool(conn: &mut Connection, name: &str) -> Result<bool> {
    let tx = conn.transaction()?;
    let Some(parent) = tx
        .query_row(
            "SELECT parent FROM resource_pool WHERE name = ?1",
            [name],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
    else {
        return Ok(false);
    };
    tx.execute(
        "UPDATE vm SET resource_pool = ?2 WHERE resource_pool = ?1",
        params![name, parent],
    )?;
    tx.execute(
        "UPDATE resource_pool SET parent = ?2 WHERE parent = ?1",
        params![name, parent],
    )?;
    tx.execute("DELETE FROM resource_pool WHERE name = ?1", [name])?;
    tx.commit()?;
    Ok(true)
}

pub(super) fn set_vm_pool(
    conn: &mut Connection,
    vms: &[String],
    pool: Option<&str>,
) -> Result<bool> {
    let tx = conn.transaction()?;
    for vm in vms {
        let n = tx.execute(
            "UPDATE vm SET resource_pool = ?2 WHERE name = ?1",
            params![vm, pool],
        )?;
        if n != 1 {
            // Dropping the transaction rolls the others back.
            return Ok(false);
        }
    }
    tx.commit()?;
    Ok(true)
}

fn rule_of(raw: (String, String, String)) -> Result<Rule> {
    Ok(Rule {
        name: raw.0,
        cluster: raw.1,
        definition: from_json::<RuleDefinition>("rule.definition", &raw.2)?,
    })
}

fn raw_rule(r: &Row<'_>) -> rusqlite::Result<(String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

pub(super) fn rules(conn: &Connection) -> Result<Vec<Rule>> {
    let mut stmt = conn.prepare("SELECT name, cluster, definition FROM rule ORDER BY name")?;
    let rows = stmt.query_map([], raw_rule)?;
    collect(rows, rule_of)
}

pub(super) fn rule(conn: &Connection, name: &str) -> Result<Option<Rule>> {
    let raw = conn
        .query_row(
            "SELECT name, cluster, definition FROM rule WHERE name = ?1",
            [name],
            raw_rule,
        )
        .optional()?;
    raw.map(rule_of).transpose()
}

pub(super) fn add_rule(conn: &Connection, rule: &Rule) -> Result<()> {
    let n = conn.execute(
        "INSERT INTO rule (name, cluster, definition) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![
            rule.name,
            rule.cluster,
            to_json("rule.definition", &rule.definition)?
        ],
    )?;
    if n == 0 {
        return Err(StoreError::Exists(format!("rule {}", rule.name)));
    }
    Ok(())
}

pub(super) fn update_rule(conn: &Connection, rule: &Rule) -> Result<bool> {
    let n = conn.execute(
        "UPDATE rule SET definition = ?2 WHERE name = ?1",
        params![rule.name, to_json("rule.definition", &rule.definition)?],
    )?;
    Ok(n == 1)
}

pub(super) fn delete_rule(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.execute("DELETE FROM rule WHERE name = ?1", [name])? == 1)
}
