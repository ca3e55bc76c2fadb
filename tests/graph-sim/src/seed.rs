//! Deterministic directory seeding: N realistic, varied users from a seed, plus nested groups and admins.
//!
//! The same seed always yields the same ids and data: Unicode names, missing `mail` and phones, long addresses,
//! several companies and departments, disabled accounts, extension attributes, nested groups and role holders.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::directory::{Directory, DirectoryError, Kind, Mutation};

/// What to seed (control API `POST /control/tenants/{t}/seed`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SeedSpec {
    /// Number of users.
    pub users: usize,
    /// Random seed; equal seeds give equal directories.
    pub seed: u64,
    /// Also create company/department groups (nested under "All Staff") and role holders.
    pub groups: bool,
}

impl Default for SeedSpec {
    fn default() -> Self {
        Self {
            users: 100,
            seed: 1,
            groups: true,
        }
    }
}

/// What seeding created.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedSummary {
    /// Users created.
    pub users: usize,
    /// Groups created.
    pub groups: usize,
    /// Ids of Global Administrators.
    pub global_admins: Vec<String>,
    /// Ids of Groups Administrators.
    pub groups_admins: Vec<String>,
    /// Group ids by display name.
    pub group_ids: Map<String, Value>,
    /// The first few user ids (handy for tests).
    pub sample_user_ids: Vec<String>,
}

/// (display form, ASCII form for addresses)
const GIVEN: &[(&str, &str)] = &[
    ("Anna", "anna"),
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Björn", "bjorn"),
    ("Łukasz", "lukasz"),
    ("Siobhán", "siobhan"),
    ("François", "francois"),
    ("Ngọc", "ngoc"),
    ("Ørjan", "orjan"),
    ("Ahmed", "ahmed"),
    ("Priya", "priya"),
    ("Kenji", "kenji"),
    ("Ελένη", "eleni"),
    ("Дмитрий", "dmitry"),
    ("Chloé", "chloe"),
    ("Mateo", "mateo"),
    ("Aisling", "aisling"),
    ("Jürgen", "jurgen"),
    ("Fatma", "fatma"),
    ("Wei", "wei"),
    ("Olumide", "olumide"),
    ("Mary-Jane", "maryjane"),
    ("Søren", "soren"),
    ("Inés", "ines"),
];

const SURNAMES: &[(&str, &str)] = &[
    ("Müller", "muller"),
    ("García", "garcia"),
    ("O'Brien", "obrien"),
    ("Nguyễn", "nguyen"),
    ("Kowalski", "kowalski"),
    ("Çelik", "celik"),
    ("Smith", "smith"),
    ("Núñez", "nunez"),
    ("山田", "yamada"),
    ("Иванов", "ivanov"),
    ("Papadopoulos", "papadopoulos"),
    ("van der Berg", "vanderberg"),
    ("Okafor", "okafor"),
    ("Håkansson", "hakansson"),
    ("Dubois", "dubois"),
    ("Sharma", "sharma"),
    ("李", "li"),
    ("Johansson-Lindqvist", "johanssonlindqvist"),
    ("D'Angelo", "dangelo"),
    ("Schmidt", "schmidt"),
];

const COMPANIES: &[(&str, &str)] = &[
    ("Contoso Ltd", "contoso.com"),
    ("Fabrikam, Inc.", "fabrikam.com"),
    ("Northwind Traders", "northwind.example"),
    ("Tailspin Toys GmbH", "tailspin.de"),
    ("Woodgrove Bank", "woodgrove.example"),
];

const DEPARTMENTS: &[&str] = &[
    "Sales",
    "Marketing",
    "Engineering",
    "Finance",
    "Human Resources",
    "Legal",
    "Operations",
    "Customer Success",
    "Research & Development",
    "IT",
];

const TITLES: &[&str] = &[
    "Account Executive",
    "Software Engineer",
    "Senior Software Engineer",
    "Product Manager",
    "Chief Executive Officer",
    "Head of Sales EMEA",
    "Financial Analyst",
    "HR Business Partner",
    "Legal Counsel",
    "Support Specialist",
    "Director of Research & Development",
];

/// (city, state, postal code, country code, language)
const PLACES: &[(&str, &str, &str, &str, &str)] = &[
    ("Redmond", "WA", "98052", "US", "en-US"),
    ("München", "Bayern", "80331", "DE", "de-DE"),
    ("Zürich", "ZH", "8001", "CH", "de-CH"),
    ("São Paulo", "SP", "01310-100", "BR", "pt-BR"),
    ("Kraków", "Małopolskie", "30-001", "PL", "pl-PL"),
    ("東京", "東京都", "100-0005", "JP", "ja-JP"),
    ("Dublin", "Leinster", "D02 XY45", "IE", "en-IE"),
    ("Montréal", "QC", "H2Y 1C6", "CA", "fr-CA"),
];

const STREETS: &[&str] = &[
    "1 Microsoft Way",
    "Leopoldstraße 12",
    "Bahnhofstrasse 45",
    "Avenida Paulista, 1578",
    "ul. Floriańska 3",
    "千代田1-1",
    "12 Grafton Street",
    "1000 Rue Sherbrooke O",
];

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn guid(rng: &mut StdRng) -> String {
    let bytes: [u8; 16] = rng.random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn user_props(
    rng: &mut StdRng,
    i: usize,
    domain: &str,
    company: usize,
    dept: usize,
) -> Map<String, Value> {
    let (given, given_ascii) = *pick(rng, GIVEN);
    let (surname, surname_ascii) = *pick(rng, SURNAMES);
    let (company_name, company_domain) = COMPANIES[company];
    let (city, state, postal, country, lang) = *pick(rng, PLACES);
    let alias = format!("{given_ascii}.{surname_ascii}{i}");
    let mut p = Map::new();
    p.insert("displayName".into(), json!(format!("{given} {surname}")));
    p.insert("givenName".into(), json!(given));
    p.insert("surname".into(), json!(surname));
    p.insert(
        "userPrincipalName".into(),
        json!(format!("{alias}@{domain}")),
    );
    p.insert("accountEnabled".into(), json!(rng.random_bool(0.97)));
    p.insert("companyName".into(), json!(company_name));
    p.insert("department".into(), json!(DEPARTMENTS[dept]));
    p.insert("jobTitle".into(), json!(pick(rng, TITLES)));
    p.insert("city".into(), json!(city));
    p.insert("state".into(), json!(state));
    p.insert("postalCode".into(), json!(postal));
    p.insert("country".into(), json!(country));
    p.insert("usageLocation".into(), json!(country));
    p.insert("preferredLanguage".into(), json!(lang));
    if rng.random_bool(0.9) {
        p.insert("mail".into(), json!(format!("{alias}@{company_domain}")));
    }
    if rng.random_bool(0.85) {
        p.insert(
            "businessPhones".into(),
            json!([format!("+1 425 555 {:04}", i % 10_000)]),
        );
    }
    if rng.random_bool(0.7) {
        p.insert(
            "mobilePhone".into(),
            json!(format!("+44 7700 {:06}", rng.random_range(0..1_000_000))),
        );
    }
    if rng.random_bool(0.8) {
        p.insert(
            "officeLocation".into(),
            json!(format!(
                "{} {}/{}",
                city,
                rng.random_range(1..40),
                rng.random_range(100..999)
            )),
        );
    }
    let street = if rng.random_bool(0.05) {
        format!(
            "{}, Building {}, Floor {}, c/o {} Facilities Management, Loading Dock Entrance via the Service Road behind the Car Park, Attention: Mailroom Supervisor, Internal Routing Code {:08}",
            pick(rng, STREETS),
            rng.random_range(1..99),
            rng.random_range(1..40),
            company_name,
            rng.random_range(0..100_000_000)
        )
    } else {
        (*pick(rng, STREETS)).to_owned()
    };
    p.insert("streetAddress".into(), json!(street));
    if rng.random_bool(0.8) {
        p.insert("employeeId".into(), json!(format!("E{i:06}")));
    }
    p.insert(
        "employeeType".into(),
        json!(if rng.random_bool(0.9) {
            "Employee"
        } else {
            "Contractor"
        }),
    );
    if rng.random_bool(0.3) {
        p.insert(
            "onPremisesExtensionAttributes".into(),
            json!({"extensionAttribute1": format!("CC-{:04}", rng.random_range(0..10_000))}),
        );
    }
    p
}

/// Seeds users (and groups and admins) into a directory.
pub fn seed(
    dir: &mut Directory,
    spec: &SeedSpec,
    domain: &str,
) -> Result<(SeedSummary, Mutation), DirectoryError> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut events = Vec::with_capacity(spec.users + 32);
    let mut users = Vec::with_capacity(spec.users);
    for i in 0..spec.users {
        let company = rng.random_range(0..COMPANIES.len());
        let dept = rng.random_range(0..DEPARTMENTS.len());
        let id = guid(&mut rng);
        let props = user_props(&mut rng, i, domain, company, dept);
        let (id, m) = dir.create(Kind::User, Some(id), &props)?;
        events.extend(m.events);
        users.push((id, company, dept));
    }
    let mut summary = SeedSummary {
        users: users.len(),
        groups: 0,
        global_admins: Vec::new(),
        groups_admins: Vec::new(),
        group_ids: Map::new(),
        sample_user_ids: users.iter().take(10).map(|(id, _, _)| id.clone()).collect(),
    };
    if spec.groups {
        seed_groups(dir, &mut rng, &users, &mut summary, &mut events)?;
    }
    Ok((
        summary,
        Mutation {
            seq: dir.seq(),
            events,
        },
    ))
}

fn new_group(
    dir: &mut Directory,
    rng: &mut StdRng,
    name: &str,
    events: &mut Vec<crate::directory::DirEvent>,
) -> Result<String, DirectoryError> {
    let nick: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
    let props = json!({"displayName": name, "mailNickname": nick, "securityEnabled": true, "mailEnabled": false, "description": format!("{name} (seeded)")});
    let props = props.as_object().cloned().unwrap_or_default();
    let (id, m) = dir.create(Kind::Group, Some(guid(rng)), &props)?;
    events.extend(m.events);
    Ok(id)
}

fn seed_groups(
    dir: &mut Directory,
    rng: &mut StdRng,
    users: &[(String, usize, usize)],
    summary: &mut SeedSummary,
    events: &mut Vec<crate::directory::DirEvent>,
) -> Result<(), DirectoryError> {
    let all = new_group(dir, rng, "All Staff", events)?;
    summary.group_ids.insert("All Staff".into(), json!(all));
    let mut companies = Vec::new();
    for (name, _) in COMPANIES {
        let id = new_group(dir, rng, name, events)?;
        events.extend(dir.add_member(&all, &id)?.events);
        summary.group_ids.insert((*name).into(), json!(id));
        companies.push(id);
    }
    let mut depts = Vec::new();
    for name in DEPARTMENTS {
        let id = new_group(dir, rng, &format!("Dept {name}"), events)?;
        summary.group_ids.insert(format!("Dept {name}"), json!(id));
        depts.push(id);
    }
    for (uid, company, dept) in users {
        events.extend(dir.add_member(&companies[*company], uid)?.events);
        events.extend(dir.add_member(&depts[*dept], uid)?.events);
    }
    summary.groups = 1 + companies.len() + depts.len();
    for (i, (uid, _, _)) in users.iter().enumerate().take(8) {
        if i < 3 {
            dir.assign_role("62e90394-69f5-4237-9190-012177145e10", uid)?;
            summary.global_admins.push(uid.clone());
        } else {
            dir.assign_role("fdd7a751-b60b-444a-984c-02652fe8fa1c", uid)?;
            summary.groups_admins.push(uid.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_directory() {
        let spec = SeedSpec {
            users: 50,
            seed: 42,
            groups: true,
        };
        let mut a = Directory::default();
        let mut b = Directory::default();
        seed(&mut a, &spec, "x.onmicrosoft.com").expect("seed a");
        seed(&mut b, &spec, "x.onmicrosoft.com").expect("seed b");
        assert_eq!(a.snapshot(), b.snapshot());
    }

    #[test]
    fn seeded_data_varies_as_promised() {
        let spec = SeedSpec {
            users: 400,
            seed: 7,
            groups: true,
        };
        let mut dir = Directory::default();
        let (summary, _) = seed(&mut dir, &spec, "x.onmicrosoft.com").expect("seed");
        let users: Vec<_> = dir.objects(Kind::User).values().collect();
        assert_eq!(users.len(), 400);
        assert!(
            users.iter().any(|u| u.get_str("mail").is_none()),
            "some users lack mail"
        );
        assert!(
            users.iter().any(|u| u.get_str("mobilePhone").is_none()),
            "some users lack a mobile phone"
        );
        assert!(
            users
                .iter()
                .any(|u| !u.get_str("displayName").unwrap_or("").is_ascii()),
            "some names are non-ASCII"
        );
        assert!(
            users
                .iter()
                .any(|u| u.get_str("streetAddress").is_some_and(|s| s.len() > 150)),
            "some addresses are long"
        );
        assert_eq!(summary.global_admins.len(), 3);
        let all = summary.group_ids["All Staff"].as_str().expect("id");
        assert!(
            dir.transitive_members(all).expect("group").len() > 400,
            "users reach All Staff through nesting"
        );
    }
}
