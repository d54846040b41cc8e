//! `voxanne clinic apply FILE` and `voxanne clinic export ID`: a clinic in one file.
//!
//! Apply is idempotent: the organisation is found by the file's `clinic.id` (created the first
//! time), the config is stored as canonical JSON (unchanged → no write), the org's numbers
//! become exactly the file's, and knowledge is chunked and embedded, re-embedding only chunks
//! whose text (or the embedding model) changed. Calls, appointments and messages are never
//! touched.

use std::path::Path;

use sha2::{Digest, Sha256};

use engines::minilm::MiniLm;
use receptionist::clinic::{ClinicFile, chunks};
use storage::{KnowledgeChunk, OrgId, Store};

/// What an apply changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplySummary {
    pub org: OrgId,
    pub created: bool,
    pub config_changed: bool,
    pub numbers: usize,
    pub chunks_embedded: usize,
    pub chunks_kept: usize,
    pub chunks_removed: usize,
}

impl std::fmt::Display for ApplySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "organisation {} ({}): config {}, {} number(s); knowledge: {} chunk(s) embedded, {} unchanged, {} removed",
            self.org,
            if self.created { "created" } else { "existing" },
            if self.config_changed {
                "updated"
            } else {
                "unchanged"
            },
            self.numbers,
            self.chunks_embedded,
            self.chunks_kept,
            self.chunks_removed
        )
    }
}

/// Reads a clinic file, resolving knowledge `file = …` entries relative to it.
pub fn read_file(path: &Path) -> anyhow::Result<ClinicFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut file =
        ClinicFile::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for k in &mut file.knowledge {
        if k.text.is_none()
            && let Some(f) = &k.file
        {
            let p = base.join(f);
            k.text = Some(std::fs::read_to_string(&p).map_err(|e| {
                anyhow::anyhow!("knowledge {:?}: cannot read {}: {e}", k.title, p.display())
            })?);
        }
    }
    Ok(file)
}

fn sha256(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Applies a clinic file. `embedder` is needed when the file has knowledge whose embedding is
/// missing or stale.
pub async fn apply(
    store: &Store,
    file: ClinicFile,
    embedder: Option<&MiniLm>,
) -> anyhow::Result<ApplySummary> {
    let clinic = file.clone().validate()?;
    let id = &clinic.file.clinic.id;
    let existing = store.org_by_slug(id).await?;
    let org = store.upsert_org(id, clinic.name()).await?;
    let assistant = store
        .org_assistant(org)
        .await?
        .ok_or_else(|| anyhow::anyhow!("organisation {org} has no assistant"))?;
    // Numbers first: a number another clinic owns refuses the whole file before its
    // configuration is stored (the other order kept a refused file's settings).
    store
        .set_org_numbers(org, assistant, &clinic.file.clinic.numbers)
        .await?;
    // `llm.api_key = "***"` (the redacted value an export or `GET /api/v1/clinic` shows) keeps
    // the stored key rather than storing the stars.
    let mut file = file;
    if let Some(llm) = file.llm.as_mut()
        && llm.api_key.as_deref() == Some(receptionist::clinic::REDACTED_KEY)
    {
        llm.api_key = match existing {
            Some(_) => match store.get_clinic(org).await? {
                Some(json) => ClinicFile::from_json(&json)?.llm.and_then(|l| l.api_key),
                None => None,
            },
            None => None,
        };
    }
    let config_changed = store.put_clinic(org, &file.to_json()).await?;

    let wanted = chunks(&clinic.file.knowledge);
    let index = store.knowledge_index(org).await?;
    let version = embedder.map(|e| e.model_version().to_string());
    let stored = store.list_knowledge(org).await?;
    let mut out = Vec::with_capacity(wanted.len());
    let mut to_embed = Vec::new();
    for c in &wanted {
        // The store keys freshness on the text's hash (a title change is a new chunk id).
        let hash = sha256(&c.text);
        let fresh = index
            .get(&c.id)
            .is_some_and(|(h, model)| *h == hash && version.as_deref().is_none_or(|v| v == model));
        if fresh && let Some(s) = stored.iter().find(|s| s.id == c.id) {
            out.push(s.clone());
        } else {
            to_embed.push(out.len());
            out.push(KnowledgeChunk {
                id: c.id.clone(),
                title: c.title.clone(),
                text: c.text.clone(),
                model: String::new(),
                embedding: Vec::new(),
            });
        }
    }
    if !to_embed.is_empty() {
        let embedder = embedder.ok_or_else(|| {
            anyhow::anyhow!(
                "the clinic's knowledge needs the MiniLM embedding model: run `voxanne models fetch`"
            )
        })?;
        // Title and text together: the title ("Parking") carries much of what callers ask.
        let texts: Vec<String> = to_embed
            .iter()
            .map(|&i| format!("{}: {}", out[i].title, out[i].text))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = embedder.embed_batch(&refs)?;
        for (&i, v) in to_embed.iter().zip(vectors) {
            out[i].embedding = v;
            out[i].model = embedder.model_version().to_string();
        }
    }
    let removed = index
        .keys()
        .filter(|k| !wanted.iter().any(|c| &c.id == *k))
        .count();
    let changed_knowledge = !to_embed.is_empty() || removed > 0;
    if changed_knowledge {
        store.replace_knowledge(org, &out).await?;
    }
    Ok(ApplySummary {
        org,
        created: existing.is_none(),
        config_changed,
        numbers: clinic.file.clinic.numbers.len(),
        chunks_embedded: to_embed.len(),
        chunks_kept: wanted.len() - to_embed.len(),
        chunks_removed: removed,
    })
}

/// The stored clinic file of organisation `id` (its `clinic.id`), as TOML.
pub async fn export(store: &Store, id: &str) -> anyhow::Result<String> {
    let org = store
        .org_by_slug(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no clinic {id:?} (apply its file first)"))?;
    let json = store
        .get_clinic(org)
        .await?
        .ok_or_else(|| anyhow::anyhow!("organisation {id:?} has no clinic file"))?;
    let mut file = ClinicFile::from_json(&json)?;
    // The export is shared and versioned; a key in the file stays where it is stored.
    file.llm = file.llm.as_ref().map(|l| l.redacted());
    Ok(file.to_toml())
}
