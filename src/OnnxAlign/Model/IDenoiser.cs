namespace OnnxAlign.Model;

/// <summary>
/// A batch noise predictor (x_t, t) → ε̂ on a VP schedule (DESIGN §6). The ONNX base law implements it; guidance
/// (tilts and their mixtures) decorates it; samplers see only this interface.
/// </summary>
public interface IDenoiser
{
    /// <summary>Shape of one sample, without the batch dimension (e.g. [2] or [1, 32, 32]).</summary>
    IReadOnlyList<int> SampleShape { get; }

    /// <summary>Number of values in one sample (the product of <see cref="SampleShape"/>).</summary>
    int SampleSize { get; }

    /// <summary>The noise schedule the network was trained with; gives α_t, σ_t at every timestep.</summary>
    NoiseSchedule Schedule { get; }

    /// <summary>
    /// Writes ε̂(x, t) for a batch laid out sample after sample (<paramref name="batchSize"/> × <see cref="SampleSize"/>).
    /// Whatever the network predicts (ε, v or x0), the result is converted to ε (DESIGN §0).
    /// </summary>
    void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise);
}
