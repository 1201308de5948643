//! Models: their metadata revisions (a series) and listings. A model
//! exists once its first metadata record exists.

use super::*;

impl Store {
    /// Creates a model (create-if-absent on its first metadata record).
    pub async fn create_model(
        &self,
        namespace: &str,
        name: &str,
        sensitivity: Sensitivity,
        tags: BTreeMap<String, String>,
        owner: &str,
    ) -> Result<ModelRecord, StorageError> {
        self.create_model_with(
            namespace,
            name,
            sensitivity,
            tags,
            owner,
            BTreeMap::new(),
            &[],
        )
        .await
    }

    /// Creates a model with metadata; keys in `sensitive` are sealed.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_model_with(
        &self,
        namespace: &str,
        name: &str,
        sensitivity: Sensitivity,
        tags: BTreeMap<String, String>,
        owner: &str,
        metadata: BTreeMap<String, String>,
        sensitive: &[String],
    ) -> Result<ModelRecord, StorageError> {
        names::validate_name("namespace", namespace)?;
        names::validate_name("model", name)?;
        for (k, v) in &tags {
            metadata::check_entry("tag", k, v)?;
        }
        let at = now();
        let mut record = ModelRecord {
            namespace: namespace.into(),
            name: name.into(),
            sensitivity,
            tags,
            owner: owner.into(),
            created_at: at,
            revision: 0,
            metadata: BTreeMap::new(),
            sensitive_fields: Vec::new(),
            sealed_metadata: None,
            changed_by: owner.into(),
            changed_at: Some(at),
        };
        self.set_metadata(&mut record, metadata, sensitive).await?;
        let path = layout::seq_record(&layout::model_meta_dir(namespace, name), 0);
        match self.create_record("model", &path, &record).await {
            Err(StorageError::AlreadyExists(_)) => Err(StorageError::AlreadyExists(format!(
                "model {namespace}/{name}"
            ))),
            Err(e) => Err(e),
            Ok(()) => {
                self.start_commit_log(namespace, name).await?;
                Ok(record)
            }
        }
    }

    /// A model's latest metadata; `None` if it does not exist.
    pub async fn get_model(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ModelRecord>, StorageError> {
        names::validate_name("namespace", namespace)?;
        names::validate_name("model", name)?;
        let dir = layout::model_meta_dir(namespace, name);
        let Some((seq, record)) = self.read_latest::<ModelRecord>("model", &dir).await? else {
            return Ok(None);
        };
        if record.namespace != namespace || record.name != name || record.revision != seq {
            return Err(StorageError::Integrity(format!(
                "model record {dir} names another model"
            )));
        }
        Ok(Some(record))
    }

    pub(crate) async fn require_model(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<ModelRecord, StorageError> {
        self.get_model(namespace, name)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("model {namespace}/{name}")))
    }

    /// Namespaces that hold at least one model.
    pub async fn list_namespaces(&self) -> Result<Vec<String>, StorageError> {
        let listing = self
            .objects
            .list_with_delimiter(Some(&layout::models_root()))
            .await?;
        // Skip anything that is not a valid name (a stray object must not
        // break listing for everyone).
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|ns| names::validate_name("namespace", ns).is_ok())
            .collect())
    }

    /// Models in a namespace, sorted by name.
    pub async fn list_models(&self, namespace: &str) -> Result<Vec<ModelRecord>, StorageError> {
        names::validate_name("namespace", namespace)?;
        let listing = self
            .objects
            .list_with_delimiter(Some(&layout::namespace_root(namespace)))
            .await?;
        let mut out = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(name) = prefix.filename() else {
                continue;
            };
            if names::validate_name("model", name).is_err() {
                continue;
            }
            if let Some(m) = self.get_model(namespace, name).await? {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
