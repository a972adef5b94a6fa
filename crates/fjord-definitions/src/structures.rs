//! Types and their elements: what FHIRPath navigation, `is`/`as` and validation need to know of
//! the R4 structure definitions.

use rustc_hash::FxHashMap;
use std::sync::OnceLock;

use crate::generated::structures::{ELEMENTS, TYPES};

/// What a type is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeKind {
    Primitive,
    Complex,
    Resource,
}

/// An R4 type: a primitive (`date`), a complex type (`Quantity`) or a resource (`Patient`),
/// abstract ones (`Element`, `Resource`, `DomainResource`, `BackboneElement`) included.
#[derive(Debug)]
pub struct TypeDef {
    pub name: &'static str,
    pub kind: TypeKind,
    /// The type it specialises (`code` → `string`, `Patient` → `DomainResource`).
    pub base: Option<&'static str>,
    pub is_abstract: bool,
    /// The regular expression every value of a primitive type matches, whole.
    pub regex: Option<&'static str>,
    /// Invariants of every value of the type that its base types do not already have (`ele-1`,
    /// which every element has, is left to validation to check natively).
    pub constraints: &'static [Constraint],
}

/// An invariant: a FHIRPath expression that must be true of every value of an element or type.
#[derive(Debug)]
pub struct Constraint {
    /// `obs-6`, `dom-3`
    pub key: &'static str,
    pub severity: Severity,
    pub expression: &'static str,
    /// The rule in one line, as the specification states it.
    pub human: &'static str,
    /// A recommendation rather than a rule (`dom-6`: a resource should have a narrative).
    pub best_practice: bool,
}

/// How serious breaking an invariant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// How strongly an element's codes are bound to a value set (`example` bindings are left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingStrength {
    Required,
    Extensible,
    Preferred,
}

/// The value set an element's codes are bound to.
#[derive(Debug)]
pub struct Binding {
    pub strength: BindingStrength,
    /// Canonical URL, without version.
    pub value_set: &'static str,
}

/// An element introduced by a type (inherited elements belong to the type that introduced them).
#[derive(Debug)]
pub struct ElementDef {
    /// `Observation.component.value[x]`
    pub path: &'static str,
    /// Type codes; several for a choice (`[x]`) element. `BackboneElement`/`Element` mean the
    /// element's children are defined under its own path. FHIRPath system types are spelled
    /// `System.String` etc. (the `value` of primitives).
    pub types: &'static [&'static str],
    pub min: u32,
    /// Whether more than one value is allowed.
    pub many: bool,
    /// Part of the summary view (`_summary=true`).
    pub summary: bool,
    /// For an element defined as another's structure (`Questionnaire.item.item` →
    /// `Questionnaire.item`).
    pub content_reference: Option<&'static str>,
    pub binding: Option<Binding>,
    /// The element's own invariants; those of its type are on the type.
    pub constraints: &'static [Constraint],
}

impl ElementDef {
    /// The element's name, without `[x]`.
    pub fn name(&self) -> &'static str {
        let last = self.path.rsplit('.').next().unwrap_or(self.path);
        last.strip_suffix("[x]").unwrap_or(last)
    }

    pub fn is_choice(&self) -> bool {
        self.path.ends_with("[x]")
    }

    /// Where the children of a value of this element are defined, given the type it has: the
    /// element's own path for inline structures, the type's name otherwise.
    pub fn structure_of(&self, type_code: &str) -> &'static str {
        if let Some(reference) = self.content_reference {
            return reference;
        }
        match type_code {
            "BackboneElement" | "Element" => self.path,
            _ => self
                .types
                .iter()
                .find(|t| **t == type_code)
                .copied()
                .unwrap_or(self.path),
        }
    }
}

/// The type with this name.
pub fn type_def(name: &str) -> Option<&'static TypeDef> {
    TYPES
        .binary_search_by(|t| t.name.cmp(name))
        .ok()
        .map(|i| &TYPES[i])
}

/// Every type, sorted by name.
pub fn types() -> &'static [TypeDef] {
    TYPES
}

/// The element at this exact path.
pub fn element(path: &str) -> Option<&'static ElementDef> {
    ELEMENTS
        .binary_search_by(|e| e.path.cmp(path))
        .ok()
        .map(|i| &ELEMENTS[i])
}

/// The child element `name` of a structure: a type name (`HumanName`) or the path of an inline
/// structure (`Observation.component`). Choice elements are found by their name without `[x]`;
/// inherited elements through the base types (inline structures inherit from `BackboneElement`).
pub fn child_element(structure: &str, name: &str) -> Option<&'static ElementDef> {
    let children = children_by_structure();
    let mut current = Some(structure);
    while let Some(owner) = current {
        if let Some(found) = children.get(owner).and_then(|c| c.get(name)) {
            return Some(found);
        }
        current = if owner.contains('.') {
            Some("BackboneElement")
        } else {
            type_def(owner).and_then(|t| t.base)
        };
    }
    None
}

/// Every element a value of `structure` (a type name or an inline structure's path) can have:
/// its own, then those of its base types.
pub fn elements_of(structure: &str) -> impl Iterator<Item = &'static ElementDef> + '_ {
    let children = children_by_structure();
    let mut current = Some(structure);
    std::iter::from_fn(move || {
        let owner = current?;
        current = if owner.contains('.') {
            Some("BackboneElement")
        } else {
            type_def(owner).and_then(|t| t.base)
        };
        Some(
            children
                .get(owner)
                .into_iter()
                .flat_map(|c| c.values().copied()),
        )
    })
    .flatten()
}

type Children = FxHashMap<&'static str, FxHashMap<&'static str, &'static ElementDef>>;

/// Elements by the structure that introduces them and their name (without `[x]`): navigation
/// runs on every step of every FHIRPath evaluation, so it is two hash lookups, not a string
/// built and searched for.
fn children_by_structure() -> &'static Children {
    static CHILDREN: OnceLock<Children> = OnceLock::new();
    CHILDREN.get_or_init(|| {
        let mut children: Children = FxHashMap::default();
        for element in ELEMENTS {
            if let Some((owner, _)) = element.path.rsplit_once('.') {
                children
                    .entry(owner)
                    .or_default()
                    .insert(element.name(), element);
            }
        }
        children
    })
}

/// Whether `name` is `ancestor` or specialises it (`code` is a `string`, `Patient` a `Resource`).
pub fn is_subtype(name: &str, ancestor: &str) -> bool {
    let mut current = Some(name);
    while let Some(t) = current {
        if t == ancestor {
            return true;
        }
        current = type_def(t).and_then(|d| d.base);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn navigation_finds_own_inherited_choice_and_inline_elements() {
        let status = child_element("Observation", "status").unwrap();
        assert_eq!(status.types, ["code"]);
        let id = child_element("Observation", "id").unwrap();
        assert_eq!(id.path, "Resource.id");
        let value = child_element("Observation", "value").unwrap();
        assert!(value.is_choice() && value.types.contains(&"Quantity"));
        let component = child_element("Observation", "component").unwrap();
        assert!(component.many);
        let structure = component.structure_of("BackboneElement");
        assert_eq!(structure, "Observation.component");
        assert_eq!(
            child_element(structure, "extension").unwrap().path,
            "Element.extension"
        );
        let nested = child_element("Questionnaire.item", "item").unwrap();
        assert_eq!(nested.structure_of("Element"), "Questionnaire.item");
        assert_eq!(
            child_element("date", "value").unwrap().types,
            ["System.Date"]
        );
    }

    #[test]
    fn subtypes() {
        assert!(is_subtype("code", "string"));
        assert!(is_subtype("Patient", "Resource"));
        assert!(!is_subtype("string", "code"));
        assert_eq!(type_def("Age").unwrap().base, Some("Quantity"));
    }
}
