using System.Numerics.Tensors;
using OnnxAlign.Core;

namespace OnnxAlign.Model;

/// <summary>Conversions between what a network predicts and ε̂, and Tweedie's x̂0 (DESIGN §0).</summary>
public static class Prediction
{
    /// <summary>Converts a network output, in place, into ε̂ given the input x_t and (α_t, σ_t).</summary>
    public static void ToNoise(PredictionType type, ReadOnlySpan<float> x, Span<float> output, double alpha, double sigma)
    {
        switch (type)
        {
            case PredictionType.Epsilon:
                return;
            case PredictionType.VPrediction:
                // v = α·ε − σ·x0  ⇒  ε̂ = σ·x + α·v
                TensorPrimitives.Multiply(output, (float)alpha, output);
                TensorPrimitives.MultiplyAdd(x, (float)sigma, output, output);
                return;
            case PredictionType.Sample:
                // ε̂ = (x − α·x̂0)/σ
                TensorPrimitives.Multiply(output, (float)(-alpha / sigma), output);
                TensorPrimitives.MultiplyAdd(x, (float)(1 / sigma), output, output);
                return;
            default:
                throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    /// <summary>Tweedie's estimate x̂0 = (x − σ·ε̂)/α (DESIGN §0).</summary>
    public static void DenoisedFromNoise(ReadOnlySpan<float> x, ReadOnlySpan<float> noise, double alpha, double sigma, Span<float> denoised)
    {
        TensorPrimitives.Multiply(x, (float)(1 / alpha), denoised);
        TensorPrimitives.MultiplyAdd(noise, (float)(-sigma / alpha), denoised, denoised);
    }
}
