//! The published `dinosiglip-vit-so-224px` towers at full size, built from their timm ids
//! (zero weights: this checks shapes and that the real sizes run, not values).

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use spec_vla::config::OpenVlaConfig;
use spec_vla::projector::Projector;
use spec_vla::vision::VisionBackbone;

pub const OPENVLA_7B_CONFIG: &str = include_str!("fixtures/openvla_7b_config.json");

#[test]
fn published_towers_give_256_by_2176_features() -> Result<()> {
    let cfg = OpenVlaConfig::from_json_str(OPENVLA_7B_CONFIG, Path::new("openvla_7b_config.json"))?;
    assert_eq!(cfg.towers[0].embed_dim, 1024);
    assert_eq!(cfg.towers[1].embed_dim, 1152);
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let vision = VisionBackbone::load(&vb.pp("vision_backbone"), &cfg)?;
    let projector = Projector::load(&vb.pp("projector"), &cfg)?;
    let pixels = Tensor::zeros((6, 224, 224), DType::F32, &Device::Cpu)?;
    let features = vision.forward(&pixels)?;
    assert_eq!(features.dims(), &[256, 2176]);
    let projected = projector.forward(&features)?;
    assert_eq!(projected.dims(), &[256, 4096]);
    Ok(())
}
